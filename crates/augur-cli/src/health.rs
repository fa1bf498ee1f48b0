//! `augur health`: a container health check that needs nothing but the `augur`
//! binary (no curl in the image).
//!
//! * `--role coordinator` (default): asks the coordinator at `--endpoint` for the
//!   cluster status. That RPC reads the election key from etcd, so a coordinator
//!   that answers is serving its API *and* reaching etcd.
//! * `--role worker`: a worker has no API, so it reads the worker's metrics
//!   endpoint (`--metrics`) and wants `augur_worker_registrations_total` >= 1:
//!   the process serves and the leader has registered it at least once.
//!
//! Either way it prints one line saying why, and exits 0 (healthy) or 1; every
//! check is bounded by `--timeout`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use augur_proto::v1 as pb;
use clap::{Args, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The longest metrics answer read (a worker's is a few KiB).
const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The coordinator API at --endpoint answers a cluster-status request.
    Coordinator,
    /// The worker's metrics endpoint answers and shows a registration.
    Worker,
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Which process to check.
    #[arg(long, value_enum, default_value_t = Role::Coordinator)]
    role: Role,
    /// Worker metrics address (as given to the worker's --metrics-listen).
    #[arg(
        long,
        env = "AUGUR_HEALTH_METRICS",
        default_value = "http://127.0.0.1:9465"
    )]
    metrics: String,
    /// Give up (unhealthy) after this long.
    #[arg(long, default_value = "3s", value_parser = parse_timeout)]
    timeout: Duration,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than 0".to_string()),
        Err(e) => Err(format!(
            "{text:?} is not a duration ({e}); write e.g. \"3s\""
        )),
    }
}

/// Runs the check and prints `healthy: ...` or `unhealthy: ...`.
pub async fn run(endpoint: &str, args: HealthArgs) -> anyhow::Result<ExitCode> {
    let check = async {
        match args.role {
            Role::Coordinator => coordinator(endpoint).await,
            Role::Worker => worker(&args.metrics).await,
        }
    };
    let verdict = match tokio::time::timeout(args.timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "no answer within {}",
            humantime::format_duration(args.timeout)
        )),
    };
    match verdict {
        Ok(reason) => {
            println!("healthy: {reason}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("unhealthy: {}", crate::client::describe(&e));
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn coordinator(endpoint: &str) -> anyhow::Result<String> {
    let mut client = crate::client::connect(endpoint).await?;
    let status = client
        .cluster_status(pb::ClusterStatusRequest {})
        .await?
        .into_inner();
    let leader = if status.leader.is_empty() {
        "no leader yet".to_string()
    } else {
        format!("leader {}", status.leader)
    };
    Ok(format!(
        "coordinator {} answers at {endpoint}; {leader}, {} workers",
        status.answered_by,
        status.workers.len()
    ))
}

async fn worker(metrics_url: &str) -> anyhow::Result<String> {
    let (host, port, path) = parse_http_url(metrics_url)?;
    let body = http_get(&host, port, &path).await?;
    let registrations = metric_value(&body, "augur_worker_registrations_total")
        .with_context(|| format!("{metrics_url} serves no augur_worker_registrations_total (not a worker's metrics endpoint?)"))?;
    if registrations < 1.0 {
        bail!("the worker at {metrics_url} is not registered yet: no leader has registered it");
    }
    let slots = metric_value(&body, "augur_worker_slots").unwrap_or(0.0);
    Ok(format!(
        "worker at {metrics_url} registered ({registrations} registrations), {slots} slots"
    ))
}

/// `http://HOST:PORT[/PATH]` → (host, port, path); the path defaults to `/metrics`.
fn parse_http_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--metrics {url:?} must start with http://");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        "/metrics".to_string()
    } else {
        path.to_string()
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => {
            let port = p
                .parse::<u16>()
                .map_err(|_| anyhow::anyhow!("--metrics {url:?}: {p:?} is not a port"))?;
            (h.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => bail!("--metrics {url:?} needs HOST:PORT"),
    };
    Ok((host.to_string(), port, path))
}

/// A plain HTTP/1.0 GET (the metrics endpoint speaks HTTP/1.1; 1.0 closes the
/// connection after the answer, so reading to the end is the whole body).
async fn http_get(host: &str, port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/plain\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .with_context(|| format!("cannot send to {host}:{port}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut answer)
        .await
        .with_context(|| format!("cannot read from {host}:{port}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{host}:{port} did not answer HTTP"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        bail!("GET http://{host}:{port}{path} answered {status_line:?}");
    }
    Ok(body.to_string())
}

/// The value of an unlabelled sample `name VALUE` in the Prometheus text format.
fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse::<f64>().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metrics_urls() {
        let (h, p, path) = parse_http_url("http://127.0.0.1:9465").unwrap();
        assert_eq!(
            (h.as_str(), p, path.as_str()),
            ("127.0.0.1", 9465, "/metrics")
        );
        let (h, p, path) = parse_http_url("http://worker:1/x/metrics").unwrap();
        assert_eq!((h.as_str(), p, path.as_str()), ("worker", 1, "/x/metrics"));
        let (h, _, _) = parse_http_url("http://[::1]:9465/").unwrap();
        assert_eq!(h, "::1");
        assert!(parse_http_url("https://127.0.0.1:9465").is_err());
        assert!(parse_http_url("http://127.0.0.1").is_err());
        assert!(parse_http_url("http://127.0.0.1:99999").is_err());
    }

    #[test]
    fn reads_unlabelled_samples_only_by_exact_name() {
        let body = "# HELP augur_worker_registrations Registrations.\n\
                    augur_worker_registrations_total_extra 7\n\
                    augur_worker_registrations_total 2\n\
                    augur_worker_slots 4\n";
        assert_eq!(
            metric_value(body, "augur_worker_registrations_total"),
            Some(2.0)
        );
        assert_eq!(metric_value(body, "augur_worker_slots"), Some(4.0));
        assert_eq!(metric_value(body, "augur_worker_running_attempts"), None);
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy_with_a_reason() {
        // Bind then drop, so the port is (very likely) closed.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = worker(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("cannot connect"), "{err:#}");
    }

    #[tokio::test]
    async fn a_worker_is_healthy_once_registered() {
        let metrics = augur_telemetry::Metrics::new(false, true);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let addr = augur_telemetry::http::serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let url = format!("http://{addr}");
        let err = worker(&url).await.unwrap_err();
        assert!(format!("{err:#}").contains("not registered"), "{err:#}");
        metrics.worker().registrations.inc();
        let reason = worker(&url).await.unwrap();
        assert!(reason.contains("registered"), "{reason}");
        // A coordinator's endpoint is not a worker's.
        let coordinator_metrics = augur_telemetry::Metrics::new(true, false);
        let addr = augur_telemetry::http::serve(
            "127.0.0.1:0".parse().unwrap(),
            coordinator_metrics,
            shutdown.clone(),
        )
        .await
        .unwrap();
        assert!(worker(&format!("http://{addr}")).await.is_err());
        shutdown.cancel();
    }
}
