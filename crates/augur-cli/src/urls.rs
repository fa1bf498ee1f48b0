//! Checking URL-valued flags at start, each error naming its flag (issue 13
//! §3): a value that would only fail later, in a log line far from the
//! command that set it, is refused before anything runs. `host:port` is
//! accepted wherever a URL is and gets the scheme its TLS settings imply.

use anyhow::bail;

/// A gRPC endpoint given to `flag`: `http://HOST:PORT` or `https://HOST:PORT`,
/// with the scheme that matches `tls` (`https` when TLS is on), or a bare
/// `HOST:PORT` to which that scheme is added. No path. Returns the URL with
/// its scheme.
pub fn endpoint_url(flag: &str, text: &str, tls: bool) -> anyhow::Result<String> {
    let scheme = if tls { "https" } else { "http" };
    checked(
        flag,
        text,
        scheme,
        Some(if tls { "TLS is on" } else { "TLS is off" }),
    )
}

/// As [`endpoint_url`], but either scheme is accepted as given (the client
/// follows it); a bare `HOST:PORT` gets `https` when `tls_by_default`.
pub fn any_scheme_url(flag: &str, text: &str, tls_by_default: bool) -> anyhow::Result<String> {
    let scheme = if tls_by_default { "https" } else { "http" };
    checked(flag, text, scheme, None)
}

/// A comma-separated list of endpoints given to `flag` (e.g. etcd's), each
/// checked as [`any_scheme_url`]; at least one.
pub fn url_list(flag: &str, text: &str, tls_by_default: bool) -> anyhow::Result<Vec<String>> {
    let urls = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| any_scheme_url(flag, item, tls_by_default))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if urls.is_empty() {
        bail!("{flag} {text:?}: give at least one URL, e.g. http://127.0.0.1:2379");
    }
    Ok(urls)
}

/// `--otlp-endpoint` if given, else `$OTEL_EXPORTER_OTLP_ENDPOINT` if set and
/// not empty, checked as [`any_scheme_url`]; `None`: no export.
pub fn otlp_endpoint(flag_value: Option<&str>) -> anyhow::Result<Option<String>> {
    let env = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok();
    otlp_endpoint_from(flag_value, env.as_deref())
}

fn otlp_endpoint_from(
    flag_value: Option<&str>,
    env: Option<&str>,
) -> anyhow::Result<Option<String>> {
    match (flag_value, env.map(str::trim).filter(|e| !e.is_empty())) {
        (Some(given), _) => any_scheme_url("--otlp-endpoint", given, false).map(Some),
        (None, Some(env)) => any_scheme_url("OTEL_EXPORTER_OTLP_ENDPOINT", env, false).map(Some),
        (None, None) => Ok(None),
    }
}

/// `text` as a URL of scheme http or https (bare `HOST:PORT` gets
/// `default_scheme`), with a host and a port and no path; with `required`
/// (why), the scheme must be `default_scheme`.
fn checked(
    flag: &str,
    text: &str,
    default_scheme: &str,
    required: Option<&str>,
) -> anyhow::Result<String> {
    let text = text.trim();
    if text.is_empty() {
        bail!("{flag}: empty; give {default_scheme}://HOST:PORT");
    }
    let url = match text.split_once("://") {
        Some((scheme, _)) if scheme != "http" && scheme != "https" => {
            bail!("{flag} {text:?}: the scheme must be http:// or https://, not {scheme}://")
        }
        Some((scheme, _)) => {
            if let Some(why) = required.filter(|_| scheme != default_scheme) {
                bail!("{flag} {text:?}: {why}, so the URL must start with {default_scheme}://");
            }
            text.to_string()
        }
        None => format!("{default_scheme}://{text}"),
    };
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{flag} {url:?}: not a URL: {e}"))?;
    if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
        bail!("{flag} {url:?}: give a host and a port, e.g. {default_scheme}://127.0.0.1:7070");
    }
    if (!uri.path().is_empty() && uri.path() != "/") || uri.query().is_some() {
        bail!("{flag} {url:?}: no path, only {default_scheme}://HOST:PORT");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_get_the_scheme_of_the_tls_settings() {
        assert_eq!(
            endpoint_url("--x", "127.0.0.1:7070", false).expect("ok"),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            endpoint_url("--x", " c1:7070 ", true).expect("ok"),
            "https://c1:7070"
        );
        assert_eq!(
            endpoint_url("--x", "https://[::1]:7070/", true).expect("ok"),
            "https://[::1]:7070/"
        );
        assert_eq!(
            any_scheme_url("--x", "https://c1:7070", false).expect("ok"),
            "https://c1:7070"
        );
        assert_eq!(
            url_list("--etcd-endpoints", "e1:2379, https://e2:2379", true).expect("ok"),
            ["https://e1:2379", "https://e2:2379"]
        );
    }

    #[test]
    fn unusable_values_are_refused_naming_the_flag() {
        for (text, tls) in [
            ("https://c1:7070", false),
            ("http://c1:7070", true),
            ("c1", false),
            ("http://c1", false),
            ("http://c1:7070/api", false),
            ("http://c1:7070?x=1", false),
            ("http://:7070", false),
            ("ftp://c1:7070", false),
            ("c1:notaport", false),
            ("", false),
            ("http://c 1:7070", false),
        ] {
            let err = endpoint_url("--flag-x", text, tls).expect_err(text);
            assert!(err.to_string().starts_with("--flag-x"), "{text}: {err}");
        }
        let err = url_list("--etcd-endpoints", " , ", false).expect_err("empty list");
        assert!(err.to_string().starts_with("--etcd-endpoints"), "{err}");
        let err = url_list("--etcd-endpoints", "http://e1:2379,e2", false).expect_err("e2");
        assert!(err.to_string().contains("\"http://e2\""), "{err}");
    }

    #[test]
    fn the_otlp_endpoint_comes_from_the_flag_or_the_environment_and_names_its_source() {
        assert_eq!(otlp_endpoint_from(None, None).expect("ok"), None);
        assert_eq!(otlp_endpoint_from(None, Some(" ")).expect("ok"), None);
        assert_eq!(
            otlp_endpoint_from(None, Some("jaeger:4317")).expect("ok"),
            Some("http://jaeger:4317".to_string())
        );
        assert_eq!(
            otlp_endpoint_from(Some("https://c:4317"), Some("nonsense")).expect("ok"),
            Some("https://c:4317".to_string())
        );
        let err = otlp_endpoint_from(Some("jaeger"), None).expect_err("no port");
        assert!(err.to_string().starts_with("--otlp-endpoint"), "{err}");
        let err = otlp_endpoint_from(None, Some("grpc://j:4317")).expect_err("scheme");
        assert!(
            err.to_string().starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{err}"
        );
    }
}
