//! Driving the cluster through the `augur` CLI, as an operator would: submit,
//! get, list, cancel, and waiting for jobs to reach a state.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::process::run_with_timeout;
use crate::wait::poll_until;

/// How long one CLI call may take before the test fails as hung.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// The states a job never leaves.
pub const TERMINAL_STATES: [&str; 4] = ["succeeded", "failed", "timed_out", "cancelled"];

/// Whether a job object (from `get`/`list --output json`) is in a terminal state.
pub fn is_terminal(job: &Value) -> bool {
    TERMINAL_STATES.contains(&json_str(job, "state"))
}

/// A string field of a JSON object; panics naming the field if it is not a string.
pub fn json_str<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field:?} is not a string in {object}"))
}

/// An unsigned integer field of a JSON object; panics naming the field otherwise.
pub fn json_u64(object: &Value, field: &str) -> u64 {
    object[field]
        .as_u64()
        .unwrap_or_else(|| panic!("field {field:?} is not an unsigned integer in {object}"))
}

fn parse_json(args: &[&str], out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("`augur {}` printed non-JSON ({e}): {text}", args.join(" ")))
}

impl Cluster {
    /// Runs `augur --endpoint <c1's API> <args>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_at(0, args)
    }

    /// Runs `augur --endpoint <coordinator index's API> <args>`.
    pub fn cli_at(&self, coordinator: usize, args: &[&str]) -> Output {
        run_with_timeout(
            Command::new(self.augur_bin())
                .env_remove("AUGUR_ENDPOINT")
                .env_remove("AUGUR_TOKEN")
                .envs(self.config.cli_env.iter().map(|(k, v)| (k, v)))
                .args(["--endpoint", &self.api_url(coordinator)])
                .args(args),
            CLI_TIMEOUT,
        )
    }

    /// Runs the CLI and panics unless it exits 0; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`augur {}` exited {}\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `augur --output json <args>`, expects success and parses stdout.
    pub fn cli_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let out = self.cli(&full);
        assert!(
            out.status.success(),
            "`augur {}` exited {}: {}",
            full.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        parse_json(&full, &out)
    }

    /// `augur submit <args>`; returns the job id it printed.
    pub fn submit(&self, args: &[&str]) -> String {
        let mut full = vec!["submit"];
        full.extend_from_slice(args);
        let id = self.cli_ok(&full).trim().to_string();
        assert!(
            id.len() == 26 && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "`augur {}` printed {id:?}, not a job id (a ULID)",
            full.join(" ")
        );
        id
    }

    /// `augur get <id> --output json`.
    pub fn get_job(&self, id: &str) -> Value {
        self.cli_json(&["get", id])
    }

    /// `augur list [--state <state>] --output json`: every matching job.
    pub fn list_jobs(&self, state: Option<&str>) -> Vec<Value> {
        let mut args = vec!["list"];
        if let Some(state) = state {
            args.extend(["--state", state]);
        }
        match self.cli_json(&args) {
            Value::Array(jobs) => jobs,
            other => panic!("`augur list` printed {other}, not a JSON array"),
        }
    }

    /// `augur workers --output json`.
    pub fn workers(&self) -> Vec<Value> {
        match self.cli_json(&["workers"]) {
            Value::Array(workers) => workers,
            other => panic!("`augur workers` printed {other}, not a JSON array"),
        }
    }

    /// `augur cluster --output json`.
    pub fn cluster_status(&self) -> Value {
        self.cli_json(&["cluster"])
    }

    /// Polls `augur get` until `accept` holds for the job; returns the job.
    pub fn wait_job(
        &self,
        id: &str,
        timeout: Duration,
        what: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        poll_until(timeout, format!("job {id} to be {what}"), || {
            let job = self.get_job(id);
            if accept(&job) {
                Ok(job)
            } else {
                Err(job.to_string())
            }
        })
    }

    /// Polls `augur get` until the job is succeeded, failed, timed_out or cancelled.
    pub fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        self.wait_job(id, timeout, "terminal", is_terminal)
    }
}
