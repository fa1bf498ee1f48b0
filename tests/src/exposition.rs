//! Reading what `/metrics` serves: scraping a node in either text format, parsing
//! samples (with their exemplars) so tests can compare values, and linting the
//! output with Prometheus's own `promtool check metrics`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::http;
use crate::process::find_on_path;

/// What Prometheus sends when it wants OpenMetrics (and so exemplars).
pub const OPENMETRICS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// One exemplar: its labels (`trace_id`) and observed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Exemplar {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub exemplar: Option<Exemplar>,
}

/// A parsed scrape: family types from `# TYPE` lines, and every sample.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

/// Suffixes a family's samples may carry in either format.
const SAMPLE_SUFFIXES: [&str; 6] = ["", "_bucket", "_sum", "_count", "_total", "_info"];

impl Exposition {
    /// Parses classic Prometheus text or OpenMetrics text.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut exposition = Exposition::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    exposition.types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample =
                parse_sample(line).map_err(|e| format!("line {}: {e}: {line}", number + 1))?;
            exposition.samples.push(sample);
        }
        Ok(exposition)
    }

    /// The samples of family `family` (any of its sample suffixes).
    pub fn family_samples<'a>(&'a self, family: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            SAMPLE_SUFFIXES
                .iter()
                .any(|suffix| s.name.strip_suffix(suffix) == Some(family))
        })
    }

    /// Whether family `family` is declared (`# TYPE`) and has at least one sample.
    pub fn has_family(&self, family: &str) -> bool {
        self.types.contains_key(family) && self.family_samples(family).next().is_some()
    }

    /// The sum of samples named exactly `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if rest.starts_with('{') {
        let (parsed, after) = parse_labels(rest)?;
        labels = parsed;
        rest = after;
    }
    let (sample_part, exemplar_part) = match rest.find(" # {") {
        Some(i) => (&rest[..i], Some(&rest[i + 3..])),
        None => (rest, None),
    };
    let value = parse_value(sample_part.split_whitespace().next().ok_or("no value")?)?;
    let exemplar = match exemplar_part {
        Some(text) => {
            let (labels, after) = parse_labels(text)?;
            let value = parse_value(after.split_whitespace().next().ok_or("no exemplar value")?)?;
            Some(Exemplar { labels, value })
        }
        None => None,
    };
    Ok(Sample {
        name,
        labels,
        value,
        exemplar,
    })
}

/// Parses `{a="x",b="y\"z"}` at the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest.split_once("=\"").ok_or("expected label=\"value\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        labels.insert(name.trim().to_string(), value);
        rest = &after[end + 1..];
    }
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|e| format!("bad value {text:?}: {e}")),
    }
}

/// Scrapes `http://{addr}/metrics`, in OpenMetrics if `openmetrics`, else in the
/// classic format; returns the body, or why the scrape failed.
pub fn scrape(addr: &str, openmetrics: bool) -> Result<String, String> {
    let headers: &[(&str, &str)] = if openmetrics {
        &[("Accept", OPENMETRICS_ACCEPT)]
    } else {
        &[]
    };
    let response = http::get(addr, "/metrics", headers)?;
    if response.status != 200 {
        return Err(format!(
            "GET {addr}/metrics answered {}: {}",
            response.status, response.body
        ));
    }
    let content_type = response.header("content-type").unwrap_or_default();
    let expected = if openmetrics {
        "application/openmetrics-text"
    } else {
        "text/plain"
    };
    if !content_type.starts_with(expected) {
        return Err(format!(
            "GET {addr}/metrics answered Content-Type {content_type:?}, expected {expected}"
        ));
    }
    Ok(response.body)
}

/// `promtool` from `PATH` (Debian's `prometheus` package; `scripts/setup.sh`).
pub fn promtool() -> PathBuf {
    find_on_path("promtool").unwrap_or_else(|| {
        panic!("`promtool` is not on PATH: run scripts/setup.sh (Debian package `prometheus`)")
    })
}

/// Runs `promtool check metrics` on `text` (saved to `file` first, so a failing
/// test leaves the exact input behind).
pub fn promtool_check_metrics(text: &str, file: &Path) -> Output {
    std::fs::write(file, text).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    let input =
        std::fs::File::open(file).unwrap_or_else(|e| panic!("open {}: {e}", file.display()));
    Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::from(input))
        .output()
        .unwrap_or_else(|e| panic!("run promtool check metrics: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_values_and_exemplars() {
        let text = "# TYPE a_seconds histogram\n\
                    a_seconds_bucket{le=\"0.5\",op=\"x\\\"y\"} 3 # {trace_id=\"ab12\"} 0.25 1.5\n\
                    a_seconds_count 3\n\
                    # TYPE b counter\nb_total 7\n";
        let parsed = Exposition::parse(text).expect("parse");
        assert_eq!(parsed.samples.len(), 3);
        let bucket = &parsed.samples[0];
        assert_eq!(bucket.labels["op"], "x\"y");
        assert_eq!(bucket.value, 3.0);
        let exemplar = bucket.exemplar.as_ref().expect("an exemplar");
        assert_eq!(exemplar.labels["trace_id"], "ab12");
        assert_eq!(exemplar.value, 0.25);
        assert!(parsed.has_family("a_seconds"));
        assert!(parsed.has_family("b"));
        assert_eq!(parsed.sum("b_total", &[]), 7.0);
        assert_eq!(parsed.sum("a_seconds_bucket", &[("le", "0.5")]), 3.0);
    }
}
