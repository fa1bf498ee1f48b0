//! A real Prometheus server (Debian's `prometheus` package) for one test: its own
//! free loopback port, its own generated config and TSDB dir, exemplar storage on,
//! scraping the given targets every second. Killed on drop; a system Prometheus
//! the package may have started (on :9090, with /etc/prometheus) is never used.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::http;
use crate::process::{find_on_path, free_ports, kill_group, spawn_logged, tail_lines};
use crate::wait::{poll_every, poll_until};

/// How long Prometheus may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the log printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// A running Prometheus; dropping it kills it.
pub struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

/// The generated `prometheus.yml`: one scrape job `augur` over `targets`
/// (`(node name, host:port)`, the name kept as a `node` label), scraped and
/// evaluated every second, loading `rule_files`.
pub fn scrape_config(targets: &[(String, String)], rule_files: &[PathBuf]) -> String {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if !rule_files.is_empty() {
        config.push_str("rule_files:\n");
        for file in rule_files {
            config.push_str(&format!("  - {:?}\n", file.display().to_string()));
        }
    }
    config.push_str("scrape_configs:\n  - job_name: augur\n    static_configs:\n");
    for (node, addr) in targets {
        config.push_str(&format!(
            "      - targets: [{addr:?}]\n        labels: {{node: {node:?}}}\n"
        ));
    }
    config
}

impl Prometheus {
    /// Starts Prometheus with its config, TSDB and log (`prometheus.log`) in `dir`,
    /// and returns once it is ready to answer queries.
    pub fn start(dir: &Path, targets: &[(String, String)], rule_files: &[PathBuf]) -> Prometheus {
        let binary = find_on_path("prometheus").unwrap_or_else(|| {
            panic!(
                "`prometheus` is not on PATH: run scripts/setup.sh (Debian package `prometheus`)"
            )
        });
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, scrape_config(targets, rule_files))
            .unwrap_or_else(|e| panic!("write {}: {e}", config_file.display()));
        let addr = format!("127.0.0.1:{}", free_ports(1)[0]);
        let log = dir.join("prometheus.log");
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--enable-feature=exemplar-storage");
        let child = spawn_logged(&mut command, &log);
        let mut prometheus = Prometheus { child, addr, log };
        prometheus.wait_ready();
        prometheus
    }

    /// `host:port` of its HTTP API.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn wait_ready(&mut self) {
        let addr = self.addr.clone();
        poll_until(
            READY_TIMEOUT,
            format!("prometheus at {addr} to be ready"),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("prometheus exited ({status}); see {}", self.log.display());
                }
                match http::get(&addr, "/-/ready", &[]) {
                    Ok(response) if response.status == 200 => Ok(()),
                    Ok(response) => Err(format!("{}: {}", response.status, response.body)),
                    Err(e) => Err(e),
                }
            },
        );
    }

    /// `GET /api/v1/<endpoint>?<name>=<value>&...`; returns the JSON body whatever
    /// its `status` (Prometheus answers errors as JSON too).
    pub fn api(&self, endpoint: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let query: Vec<String> = params
            .iter()
            .map(|(name, value)| format!("{name}={}", http::encode_query_value(value)))
            .collect();
        let path = format!("/api/v1/{endpoint}?{}", query.join("&"));
        let response = http::get(&self.addr, &path, &[])?;
        serde_json::from_str(&response.body).map_err(|e| {
            format!(
                "{path} answered {} non-JSON ({e}): {}",
                response.status, response.body
            )
        })
    }

    /// Evaluates `expr` at `time` (Unix seconds; None is now); returns the whole
    /// answer (`status`, `data`, `error`).
    pub fn query_raw(&self, expr: &str, time: Option<f64>) -> Result<Value, String> {
        match time {
            Some(time) => self.api("query", &[("query", expr), ("time", &format!("{time:.3}"))]),
            None => self.api("query", &[("query", expr)]),
        }
    }

    /// Evaluates `expr` at now and returns its result vector, or the error.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let answer = self.query_raw(expr, None)?;
        if answer["status"] != "success" {
            return Err(format!("{expr}: {answer}"));
        }
        match &answer["data"]["result"] {
            Value::Array(series) => Ok(series.clone()),
            other => Err(format!("{expr}: result is {other}, not a vector")),
        }
    }

    /// The sum of the values of `expr`'s result at now (0 for an empty result).
    pub fn query_sum(&self, expr: &str) -> Result<f64, String> {
        Ok(self.query(expr)?.iter().filter_map(series_value).sum())
    }

    /// The exemplars Prometheus stored for the series `expr` selects, between
    /// `start` and `end` (Unix seconds), as Grafana asks for them.
    pub fn exemplars(&self, expr: &str, start: f64, end: f64) -> Result<Vec<Value>, String> {
        let (start, end) = (format!("{start:.3}"), format!("{end:.3}"));
        let answer = self.api(
            "query_exemplars",
            &[("query", expr), ("start", &start), ("end", &end)],
        )?;
        if answer["status"] != "success" {
            return Err(format!("exemplars of {expr}: {answer}"));
        }
        Ok(answer["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .collect())
    }

    /// Polls `check` (given this Prometheus) every second until it holds.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&Prometheus) -> Result<T, String>,
    ) -> T {
        poll_every(Duration::from_secs(1), timeout, what, || check(self))
    }

    /// Prints the tail of Prometheus's log to stderr.
    pub fn print_log(&self) {
        eprintln!(
            "----- last {LOG_TAIL_LINES} lines of {} -----",
            self.log.display()
        );
        for line in tail_lines(&self.log, LOG_TAIL_LINES) {
            eprintln!("{line}");
        }
    }
}

/// The value of one instant-vector series (`{"metric":..,"value":[t,"v"]}`).
pub fn series_value(series: &Value) -> Option<f64> {
    series["value"][1].as_str().and_then(|v| v.parse().ok())
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.print_log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_target_and_rule_file() {
        let config = scrape_config(
            &[
                ("c1".into(), "127.0.0.1:1".into()),
                ("w1".into(), "127.0.0.1:2".into()),
            ],
            &[PathBuf::from("/x/alerts.yml")],
        );
        assert!(config.contains("scrape_interval: 1s"), "{config}");
        assert!(config.contains("- \"/x/alerts.yml\""), "{config}");
        assert!(
            config.contains("targets: [\"127.0.0.1:2\"]\n        labels: {node: \"w1\"}"),
            "{config}"
        );
    }
}
