//! The end-state checks of a chaos test: after the faults, every accepted job
//! reached the state its semantics demand, and the ledger the jobs wrote shows no
//! attempt run twice and no job run again unless its worker really died.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::jobs::{is_terminal, json_str, json_u64};
use crate::ledger::{Ledger, LedgerEntry};
use crate::wait::poll_every;

/// The final state of a workload: each job as `augur list` shows it, and what
/// the ledger says ran.
pub struct Audit {
    /// By job id; every id the test submitted.
    pub jobs: BTreeMap<String, Value>,
    /// Ledger lines by job id, in file order.
    pub runs: BTreeMap<String, Vec<LedgerEntry>>,
}

impl Audit {
    /// Waits (looking once a second, since listing many jobs costs the cluster
    /// CPU) until every job in `ids` is terminal, then reads the ledger.
    pub fn collect(
        cluster: &Cluster,
        ids: &BTreeSet<String>,
        ledger: &Ledger,
        timeout: Duration,
    ) -> Audit {
        let jobs = poll_every(
            Duration::from_secs(1),
            timeout,
            format!("all {} jobs to end", ids.len()),
            || {
                let listed = cluster.json_any(&["list"])?;
                let listed = listed.as_array().ok_or("`augur list` is not an array")?;
                let jobs: BTreeMap<String, Value> = listed
                    .iter()
                    .filter(|job| ids.contains(json_str(job, "id")))
                    .map(|job| (json_str(job, "id").to_string(), job.clone()))
                    .collect();
                let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
                for job in jobs.values() {
                    *by_state.entry(json_str(job, "state")).or_default() += 1;
                }
                if jobs.len() == ids.len() && jobs.values().all(is_terminal) {
                    Ok(jobs)
                } else {
                    Err(format!(
                        "{} of {} jobs listed, by state {by_state:?}",
                        jobs.len(),
                        ids.len()
                    ))
                }
            },
        );
        Audit {
            jobs,
            runs: ledger.by_job(),
        }
    }

    /// Every job succeeded.
    pub fn assert_all_succeeded(&self) {
        let failed: Vec<&Value> = self
            .jobs
            .values()
            .filter(|job| job["state"] != "succeeded")
            .collect();
        assert!(failed.is_empty(), "jobs that did not succeed: {failed:#?}");
    }

    /// No (job, attempt) wrote two ledger lines, no unknown job ran, and each job's
    /// final attempt (the one its record shows) really ran.
    pub fn assert_no_attempt_twice(&self) {
        for (id, lines) in &self.runs {
            assert!(
                self.jobs.contains_key(id),
                "job {id} ran but was never submitted by this test: {lines:?}"
            );
            let attempts: BTreeSet<u32> = lines.iter().map(|e| e.attempt).collect();
            assert_eq!(
                attempts.len(),
                lines.len(),
                "job {id} ran one attempt twice: {lines:?}; record {}",
                self.jobs[id]
            );
        }
        for (id, job) in &self.jobs {
            let last = json_u64(job, "attempts") as u32;
            let ran = self
                .runs
                .get(id)
                .is_some_and(|lines| lines.iter().any(|e| e.attempt == last));
            assert!(
                ran,
                "job {id}'s final attempt {last} left no ledger line: {job}"
            );
        }
    }

    /// Jobs for which `may_rerun` is false ran exactly once (one ledger line):
    /// nothing but a dead worker may make a job run again. The attempt number
    /// may still have grown, when an assignment was never delivered (e.g. lost
    /// with a leader's stream) and had to be sent again under a new attempt.
    pub fn assert_ran_once_unless(&self, may_rerun: impl Fn(&str) -> bool) {
        let reran = self.reruns(may_rerun);
        assert!(
            reran.is_empty(),
            "{} jobs ran again although no worker of theirs died:\n{}",
            reran.len(),
            reran.join("\n")
        );
    }

    /// The jobs for which `may_rerun` is false that did not run exactly once,
    /// each described with its ledger lines and record.
    pub fn reruns(&self, may_rerun: impl Fn(&str) -> bool) -> Vec<String> {
        let mut reran = Vec::new();
        for (id, job) in &self.jobs {
            if may_rerun(id) {
                continue;
            }
            let lines = self.runs.get(id).map_or(0, Vec::len);
            if lines != 1 {
                reran.push(format!(
                    "{id}: {lines} ledger lines {:?}, record {job}",
                    self.runs.get(id)
                ));
            }
        }
        reran
    }

    /// A one-line summary for the test's output.
    pub fn summary(&self) -> String {
        let lines: usize = self.runs.values().map(Vec::len).sum();
        let mut attempts: BTreeMap<u64, usize> = BTreeMap::new();
        for job in self.jobs.values() {
            *attempts.entry(json_u64(job, "attempts")).or_default() += 1;
        }
        format!(
            "{} jobs, {lines} ledger lines, jobs by final attempt {attempts:?}",
            self.jobs.len()
        )
    }
}

/// Figures a test prints (never asserts on): a named series of durations.
#[derive(Debug)]
pub struct Figure {
    name: String,
    seconds: Vec<f64>,
}

impl Figure {
    pub fn new(name: &str) -> Figure {
        Figure {
            name: name.to_string(),
            seconds: Vec::new(),
        }
    }

    pub fn add(&mut self, seconds: f64) {
        self.seconds.push(seconds);
    }

    /// The median (mean of the middle two for an even count), None if empty.
    pub fn median(&self) -> Option<f64> {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(sorted[n / 2]),
            _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        }
    }

    pub fn max(&self) -> Option<f64> {
        self.seconds.iter().copied().max_by(f64::total_cmp)
    }

    /// Prints `figure: <name>: n=.. median=..s max=..s [samples]` to stderr.
    pub fn print(&self) {
        // Long series are summarised; short ones (the failover rounds) listed.
        let samples: Vec<String> = if self.seconds.len() <= 20 {
            self.seconds.iter().map(|s| format!("{s:.2}")).collect()
        } else {
            vec!["...".to_string()]
        };
        match (self.median(), self.max()) {
            (Some(median), Some(max)) => eprintln!(
                "figure: {}: n={} median={median:.2}s max={max:.2}s samples=[{}]",
                self.name,
                self.seconds.len(),
                samples.join(", ")
            ),
            _ => eprintln!("figure: {}: no samples", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_median_and_max() {
        let mut figure = Figure::new("x");
        assert_eq!(figure.median(), None);
        for s in [3.0, 1.0, 2.0] {
            figure.add(s);
        }
        assert_eq!(figure.median(), Some(2.0));
        figure.add(10.0);
        assert_eq!(figure.median(), Some(2.5));
        assert_eq!(figure.max(), Some(10.0));
    }
}
