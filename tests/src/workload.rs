//! Workloads for chaos tests: ledger-writing jobs, and a submitter that does not
//! borrow the [`Cluster`], so a thread can keep submitting while the test kills
//! and restarts the cluster's processes.

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::chaos::run_bounded;
use crate::cluster::Cluster;
use crate::exposition::{scrape, Exposition};
use crate::ledger::Ledger;

/// How long one `augur submit` may take before the test fails as hung. The
/// circuit breaker should answer long before: this is a liveness bound only.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A `sh -c` script that appends the attempt's ledger line, then sleeps.
pub fn ledger_script(ledger: &Ledger, sleep_seconds: f64) -> String {
    format!("{}; sleep {sleep_seconds}", ledger.append_command())
}

/// What one `augur submit` call did.
#[derive(Clone, Debug)]
pub struct SubmitCall {
    /// The job id, or the CLI's exit status and stderr.
    pub result: Result<String, String>,
    /// Exit code of the CLI (None if it hung and was killed).
    pub code: Option<i32>,
    pub started: Instant,
    pub elapsed: Duration,
}

/// Submits through the `augur` CLI to any of the cluster's coordinators, holding
/// only copies of their URLs.
#[derive(Clone, Debug)]
pub struct Submitter {
    augur: PathBuf,
    endpoints: Vec<String>,
}

impl Submitter {
    pub fn new(cluster: &Cluster) -> Submitter {
        Submitter {
            augur: cluster.augur_bin().to_path_buf(),
            endpoints: (0..cluster.coordinator_count())
                .map(|i| cluster.api_url(i))
                .collect(),
        }
    }

    /// One `augur submit <args>` through coordinator `index`. A call that has not
    /// returned after [`SUBMIT_TIMEOUT`] is killed and reported as an error.
    pub fn submit_at(&self, index: usize, args: &[&str]) -> SubmitCall {
        let started = Instant::now();
        let out = run_bounded(
            Command::new(&self.augur)
                .env_remove("AUGUR_ENDPOINT")
                .args(["--endpoint", &self.endpoints[index], "submit"])
                .args(args),
            SUBMIT_TIMEOUT,
        );
        let elapsed = started.elapsed();
        let (result, code) = match out {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let result = if out.status.success() && stdout.len() == 26 {
                    Ok(stdout)
                } else {
                    Err(format!(
                        "exit {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                };
                (result, out.status.code())
            }
            Err(hung) => (Err(hung), None),
        };
        SubmitCall {
            result,
            code,
            started,
            elapsed,
        }
    }

    /// Submits with idempotency key `key`, trying coordinator after coordinator
    /// (starting at `first`) until one accepts or `timeout` passes. The key makes
    /// retries safe: a submission that committed but whose answer was lost with
    /// its coordinator yields the same job when retried, never a second one.
    pub fn submit_anywhere(
        &self,
        first: usize,
        key: &str,
        args: &[&str],
        timeout: Duration,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut full = vec!["--idempotency-key", key];
        full.extend_from_slice(args);
        let mut index = first;
        let mut errors = Vec::new();
        loop {
            let call = self.submit_at(index % self.endpoints.len(), &full);
            match call.result {
                Ok(id) => return id,
                Err(e) if Instant::now() < deadline => {
                    errors.push(e);
                    index += 1;
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!(
                    "no coordinator accepted job {key} within {timeout:?}; last error: {e}; \
                     {} earlier errors",
                    errors.len()
                ),
            }
        }
    }
}

impl Cluster {
    /// The value of a metric of worker `name` (0 if absent), Err if the scrape fails.
    pub fn worker_metric(&self, name: &str, metric: &str) -> Result<f64, String> {
        let text = scrape(self.worker_metrics_addr(name), false)?;
        let exposition = Exposition::parse(&text)?;
        Ok(exposition.sum(metric, &[]))
    }
}
