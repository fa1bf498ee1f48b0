//! Faults for chaos tests: real signals to the cluster's processes (SIGKILL,
//! SIGTERM, SIGSTOP/SIGCONT), restarts on the same ports and data dirs, and
//! reaching the cluster through whichever coordinators still answer.
//!
//! Signals go to the node's own pid, except SIGKILL which takes its whole process
//! group (as [`Cluster::kill_worker`] does). Job processes run in process groups of
//! their own, so they outlive a killed or stopped worker, as on a real crash.

use std::process::{Command, ExitStatus, Output};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cluster::{Cluster, Node};
use crate::process::kill_group;
use crate::wait::poll_until;

/// How long a restarted process may take to serve again.
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

/// Unix time now, in seconds (the clock the ledger's `date +%s.%N` uses).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The index of coordinator `name` (`c1` is 0).
pub fn coordinator_index(name: &str) -> usize {
    name.strip_prefix('c')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .map(|n| n - 1)
        .unwrap_or_else(|| panic!("{name:?} is not a coordinator name (c1, c2, ...)"))
}

/// The coordinator name of `index` (0 is `c1`).
pub fn coordinator_name(index: usize) -> String {
    format!("c{}", index + 1)
}

pub use crate::process::run_bounded;

/// Lease TTL of the chaos clusters: short, so failovers happen in seconds.
pub const CHAOS_LEASE_TTL: &str = "2s";

/// The chaos tests' cluster: 3 coordinators, 3 workers of 4 slots.
pub fn chaos_cluster() -> Cluster {
    Cluster::start(crate::ClusterConfig {
        coordinators: 3,
        workers: 3,
        worker_slots: 4,
        lease_ttl: CHAOS_LEASE_TTL,
        ..crate::ClusterConfig::default()
    })
}

fn send(pid: u32, signal: i32, name: &str) {
    // SAFETY: plain kill(2) on a pid this harness spawned; no memory is involved.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}) on {name}: {}",
        std::io::Error::last_os_error()
    );
}

impl Cluster {
    fn find_node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no process named {name}"))
    }

    fn find_node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no process named {name}"))
    }

    /// The pid of node `name` (`etcd`, `c1`, `w1`, ...).
    pub fn node_pid(&self, name: &str) -> u32 {
        self.find_node(name).child.id()
    }

    /// Sends `signal` to node `name`'s pid without changing what the harness knows
    /// about it; for use while other threads share the cluster. Follow a fatal
    /// signal with [`Cluster::reap_node`].
    pub fn signal_node(&self, name: &str, signal: i32) {
        send(self.node_pid(name), signal, name);
    }

    /// Waits up to `timeout` for node `name` to exit after a signal the test sent,
    /// reaps it and marks it as gone on purpose. Panics (after SIGKILLing it) if it
    /// is still running then: a shutdown that hangs is a bug.
    pub fn reap_node(&mut self, name: &str, timeout: Duration) -> ExitStatus {
        let node = self.find_node_mut(name);
        let deadline = Instant::now() + timeout;
        loop {
            match node.child.try_wait() {
                Ok(Some(status)) => {
                    node.killed = true;
                    node.stopped = false;
                    return status;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) | Err(_) => {
                    kill_group(node.child.id());
                    let _ = node.child.wait();
                    node.killed = true;
                    panic!("{name} did not exit within {timeout:?} of the signal; see its log");
                }
            }
        }
    }

    /// SIGKILLs node `name` and its process group, and reaps it.
    pub fn kill_node(&mut self, name: &str) {
        let node = self.find_node_mut(name);
        kill_group(node.child.id());
        let _ = node.child.wait();
        node.killed = true;
        node.stopped = false;
    }

    /// SIGTERMs node `name` (a graceful shutdown) and waits up to `timeout` for it
    /// to exit; returns its exit status.
    pub fn terminate_node(&mut self, name: &str, timeout: Duration) -> ExitStatus {
        self.signal_node(name, libc::SIGTERM);
        self.reap_node(name, timeout)
    }

    /// SIGSTOPs node `name`: it keeps its sockets and leases' keys but answers
    /// nothing, as in a long GC pause or a VM freeze.
    pub fn stop_node(&mut self, name: &str) {
        self.signal_node(name, libc::SIGSTOP);
        self.find_node_mut(name).stopped = true;
    }

    /// SIGCONTs node `name` after [`Cluster::stop_node`].
    pub fn cont_node(&mut self, name: &str) {
        self.signal_node(name, libc::SIGCONT);
        self.find_node_mut(name).stopped = false;
    }

    /// Starts coordinator `name` again after it was killed or shut down, with the
    /// same node id, ports and flags, and waits until its API answers.
    pub fn restart_coordinator(&mut self, name: &str) {
        let node = self.find_node(name);
        assert!(
            node.killed,
            "restart_coordinator({name}): it is still running"
        );
        self.start_coordinator(coordinator_index(name));
        let index = coordinator_index(name);
        poll_until(
            RESTART_TIMEOUT,
            format!("restarted {name} to serve"),
            || {
                self.assert_processes_alive();
                let out = self.cli_at(index, &["--output", "json", "cluster"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                }
            },
        );
    }

    /// SIGKILLs etcd.
    pub fn kill_etcd(&mut self) {
        self.kill_node("etcd");
    }

    /// Starts etcd again on its data dir and ports, and waits until it is healthy.
    pub fn restart_etcd(&mut self) {
        assert!(
            self.find_node("etcd").killed,
            "restart_etcd: etcd is running"
        );
        self.spawn_etcd();
        self.wait_etcd_healthy();
    }

    /// Indexes of the coordinators neither killed nor stopped by the test.
    pub fn answering_coordinators(&self) -> Vec<usize> {
        (0..self.coordinator_count())
            .filter(|&i| {
                let name = coordinator_name(i);
                self.nodes
                    .iter()
                    .any(|n| n.name == name && !n.killed && !n.stopped)
            })
            .collect()
    }

    /// How many coordinators the cluster has (running or not).
    pub fn coordinator_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.name.starts_with('c'))
            .count()
    }

    /// Runs the CLI against the first coordinator the test has not killed or stopped.
    pub fn cli_any(&self, args: &[&str]) -> Output {
        let index = *self
            .answering_coordinators()
            .first()
            .expect("every coordinator is killed or stopped");
        self.cli_at(index, args)
    }

    /// `augur --output json <args>` through [`Cluster::cli_any`]; Err with the
    /// CLI's stderr if it failed.
    pub fn json_any(&self, args: &[&str]) -> Result<Value, String> {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        let out = self.cli_any(&full);
        if !out.status.success() {
            return Err(format!(
                "`augur {}` exited {}: {}",
                full.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("non-JSON output: {e}"))
    }

    /// The leader's node id as an answering coordinator sees it (None if no leader
    /// or the call failed).
    pub fn leader(&self) -> Option<String> {
        let status = self.json_any(&["cluster"]).ok()?;
        leader_of(&status)
    }

    /// The leader's node id as coordinator `index` sees it (None if no leader or
    /// the call failed). For use while the harness does not yet know which
    /// coordinators answer (e.g. between a signal and the reaping of its target).
    pub fn leader_via(&self, index: usize) -> Option<String> {
        let out = self.cli_at(index, &["--output", "json", "cluster"]);
        let status: Value = serde_json::from_slice(&out.stdout).ok()?;
        leader_of(&status)
    }

    /// Polls until the leader is a node that `accept`s; returns its id.
    pub fn wait_leader(
        &mut self,
        timeout: Duration,
        what: &str,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        poll_until(timeout, format!("a leader that is {what}"), || {
            self.assert_processes_alive();
            match self.leader() {
                Some(leader) if accept(&leader) => Ok(leader),
                other => Err(format!("leader {other:?}")),
            }
        })
    }

    /// `augur submit <args>` through coordinator `index`; returns the job id.
    pub fn submit_via(&self, index: usize, args: &[&str]) -> String {
        let mut full = vec!["submit"];
        full.extend_from_slice(args);
        let out = self.cli_at(index, &full);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && id.len() == 26,
            "`augur {}` via {} exited {}\nstdout: {id}\nstderr: {}",
            full.join(" "),
            coordinator_name(index),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        id
    }

    /// `augur --endpoint <coordinator index> <args>`, Err if it hangs past `bound`.
    pub fn cli_within(
        &self,
        index: usize,
        args: &[&str],
        bound: Duration,
    ) -> Result<Output, String> {
        run_bounded(
            Command::new(self.augur_bin())
                .env_remove("AUGUR_ENDPOINT")
                .args(["--endpoint", &self.api_url(index)])
                .args(args),
            bound,
        )
    }

    /// The leader according to etcd itself: the node id in the oldest key under
    /// the election prefix (what the Election API calls the leader).
    pub fn election_leader(&self) -> Option<String> {
        let out = self.etcdctl(&[
            "get",
            "/augur/election",
            "--prefix",
            "--sort-by=CREATE",
            "--order=ASCEND",
            "--limit=1",
            "--print-value-only",
        ]);
        let value: Value = serde_json::from_slice(&out.stdout).ok()?;
        value["node_id"].as_str().map(str::to_string)
    }

    /// Log lines of node `name` (JSON lines, as the processes write them).
    pub fn log_lines(&self, name: &str) -> Vec<String> {
        let bytes = std::fs::read(&self.find_node(name).log).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Unix times of the log lines of `name` whose message is `message`.
    pub fn log_times(&self, name: &str, message: &str) -> Vec<f64> {
        self.log_lines(name)
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v["message"] == message || v["fields"]["message"] == message)
            .filter_map(|v| v["timestamp"].as_str().and_then(parse_rfc3339))
            .collect()
    }
}

fn leader_of(status: &Value) -> Option<String> {
    status["leader"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (what the JSON logs write) to Unix
/// seconds; None for anything else.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let mut time_parts = time.split(':');
    let hours: i64 = time_parts.next()?.parse().ok()?;
    let minutes: i64 = time_parts.next()?.parse().ok()?;
    let seconds: f64 = time_parts.next()?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((days * 86_400 + hours * 3600 + minutes * 60) as f64 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps_parse_to_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        let t = parse_rfc3339("2024-03-01T12:34:56.250000Z").expect("parses");
        assert!((t - 1_709_296_496.25).abs() < 1e-6, "{t}");
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn coordinator_names_map_to_indexes() {
        assert_eq!(coordinator_index("c1"), 0);
        assert_eq!(coordinator_index("c3"), 2);
        assert_eq!(coordinator_name(1), "c2");
    }
}
