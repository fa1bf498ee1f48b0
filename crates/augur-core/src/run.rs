//! Run records: one finished attempt, as the runtime model learns from it.
//!
//! A [`RunRecord`] holds what was known about a job when it was submitted (its
//! class, command, user, labels, requested resources, the submitter's numeric
//! hints and requested time), what is known about the worker that ran it (id and
//! relative speed), and what was measured (queue wait, runtime, outcome). It is
//! stored as JSON with a `v` schema version next to the job's terminal transition,
//! exported by `augur runs export`, and produced by the trace importers, so every
//! field is plain data and every field that a foreign source may lack has a
//! neutral default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::WorkerId;
use crate::job::{JobRecord, JobState};
use crate::transition::{AttemptOutcome, AttemptReport};

/// Schema version of stored run records.
pub const RUN_RECORD_VERSION: u32 = 1;

/// Label keys that name the job's user or tenant, in order of preference.
pub const USER_LABELS: [&str; 2] = ["user", "tenant"];

/// Prefix of labels whose value is a numeric hint for the runtime model
/// (`hint.rows=1e6` becomes the hint `rows = 1000000.0`).
pub const HINT_LABEL_PREFIX: &str = "hint.";

/// Worker label carrying its declared relative speed (`speed=2` runs a job in
/// half the time of a speed-1 worker).
pub const SPEED_LABEL: &str = "speed";

fn default_speed() -> f64 {
    1.0
}

fn default_slots() -> u32 {
    1
}

/// One finished attempt: features known at submit time, worker features and the
/// measured outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Schema version ([`RUN_RECORD_VERSION`]).
    pub v: u32,
    /// The job's id (a ULID for Augur's own jobs, `swf-<n>` for imported traces).
    pub job_id: String,
    /// The job class: the spec's name.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub command: String,
    /// User or tenant (label `user` or `tenant`), empty if unknown.
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "default_slots")]
    pub requested_slots: u32,
    #[serde(default)]
    pub requested_cpu_millis: u64,
    #[serde(default)]
    pub requested_memory_bytes: u64,
    /// Numeric hints from the submitter (labels `hint.*` that parse as numbers).
    #[serde(default)]
    pub hints: BTreeMap<String, f64>,
    /// The submitter's bound on the runtime (the spec's timeout), if any.
    #[serde(default)]
    pub requested_time_s: Option<f64>,
    pub submitted_at_ms: i64,
    #[serde(default)]
    pub worker_id: String,
    /// Relative speed of the worker that ran the attempt (1.0 = reference).
    #[serde(default = "default_speed")]
    pub worker_speed: f64,
    /// From submission to the attempt's start.
    #[serde(default)]
    pub queue_wait_ms: u64,
    /// Measured wall-clock runtime of the attempt.
    pub runtime_ms: u64,
    /// `succeeded`, `failed`, `timed_out`, `cancelled`, `oom_killed` (an
    /// attempt record whose process the OOM killer ended), or a foreign status.
    #[serde(default)]
    pub outcome: String,
    #[serde(default = "default_slots")]
    pub attempt: u32,
    pub finished_at_ms: i64,
    /// Peak memory of the attempt's cgroup, bytes (0: not measured, e.g. no
    /// cgroup on its worker, or a record from before cgroups).
    #[serde(default)]
    pub peak_memory_bytes: u64,
    /// CPU time of the attempt's cgroup, microseconds (0: not measured).
    #[serde(default)]
    pub cgroup_cpu_us: u64,
}

/// Why a job record cannot become a run record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunRecordError {
    #[error("job is {0}, not finished")]
    NotFinished(JobState),
    #[error("job has no {0}")]
    Missing(&'static str),
}

impl RunRecord {
    /// Builds the record of a job that reached a terminal state, from the terminal
    /// record (which still names the worker of its last attempt) and that
    /// worker's speed.
    pub fn from_job(job: &JobRecord, worker_speed: f64) -> Result<RunRecord, RunRecordError> {
        if !job.state.is_terminal() {
            return Err(RunRecordError::NotFinished(job.state));
        }
        let worker = job
            .worker_id
            .as_ref()
            .ok_or(RunRecordError::Missing("worker"))?;
        let finished = job
            .finished_at_ms
            .ok_or(RunRecordError::Missing("finish time"))?;
        let started = job
            .started_at_ms
            .ok_or(RunRecordError::Missing("start time"))?;
        let runtime_ms = job
            .usage
            .as_ref()
            .map(|u| u.runtime_ms)
            .unwrap_or_else(|| finished.saturating_sub(started).max(0) as u64);
        let mut record = Self::build(
            job,
            worker,
            worker_speed,
            started,
            runtime_ms,
            job.state.as_str().to_string(),
            finished,
        );
        if let Some(usage) = &job.usage {
            record.peak_memory_bytes = usage.peak_memory_bytes;
            record.cgroup_cpu_us = usage.cgroup_cpu_us;
        }
        Ok(record)
    }

    /// Builds the record of one attempt from the job as it was *before* the
    /// attempt's `Finish` transition and the worker's report. Unlike
    /// [`RunRecord::from_job`] this also covers attempts that are retried.
    pub fn from_attempt(
        job: &JobRecord,
        worker: &WorkerId,
        worker_speed: f64,
        report: &AttemptReport,
    ) -> RunRecord {
        let runtime_ms = if report.usage.runtime_ms > 0 {
            report.usage.runtime_ms
        } else {
            // Saturating: timestamps of stored records and reports may be hostile.
            report
                .finished_at_ms
                .saturating_sub(report.started_at_ms)
                .max(0) as u64
        };
        let outcome = match &report.outcome {
            AttemptOutcome::Exited {
                exit_code: Some(0), ..
            } => "succeeded",
            AttemptOutcome::Exited { .. } | AttemptOutcome::StartFailed => "failed",
            AttemptOutcome::TimedOut => "timed_out",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::OomKilled => "oom_killed",
        };
        let mut record = Self::build(
            job,
            worker,
            worker_speed,
            report.started_at_ms,
            runtime_ms,
            outcome.to_string(),
            report.finished_at_ms,
        );
        record.attempt = report.attempt;
        record.peak_memory_bytes = report.usage.peak_memory_bytes;
        record.cgroup_cpu_us = report.usage.cgroup_cpu_us;
        record
    }

    fn build(
        job: &JobRecord,
        worker: &WorkerId,
        worker_speed: f64,
        started_at_ms: i64,
        runtime_ms: u64,
        outcome: String,
        finished_at_ms: i64,
    ) -> RunRecord {
        let spec = &job.spec;
        RunRecord {
            v: RUN_RECORD_VERSION,
            job_id: job.id.to_string(),
            name: spec.name.clone(),
            command: spec.command.clone(),
            user: user_of(&spec.labels),
            labels: spec.labels.clone(),
            priority: spec.priority,
            requested_slots: spec.resources.slots,
            requested_cpu_millis: spec.resources.cpu_millis,
            requested_memory_bytes: spec.resources.memory_bytes,
            hints: hints_of(&spec.labels),
            requested_time_s: spec.timeout_ms.map(|ms| ms as f64 / 1000.0),
            submitted_at_ms: job.submitted_at_ms,
            worker_id: worker.to_string(),
            worker_speed: sanitize_speed(worker_speed),
            queue_wait_ms: started_at_ms.saturating_sub(job.submitted_at_ms).max(0) as u64,
            runtime_ms,
            outcome,
            attempt: job.attempt,
            finished_at_ms,
            peak_memory_bytes: 0,
            cgroup_cpu_us: 0,
        }
    }

    /// A record holding only what is known at submission (for predicting a job
    /// that has not run): measured fields are zero, the worker unknown.
    pub fn for_submission(job: &JobRecord) -> RunRecord {
        Self::build(
            job,
            &WorkerId::unknown(),
            1.0,
            job.submitted_at_ms,
            0,
            String::new(),
            0,
        )
    }

    /// The runtime this attempt would have had on a speed-1 worker, in seconds.
    pub fn reference_runtime_s(&self) -> f64 {
        self.runtime_ms as f64 / 1000.0 * sanitize_speed(self.worker_speed)
    }
}

/// The user or tenant named by a job's labels, or `""`.
pub fn user_of(labels: &BTreeMap<String, String>) -> String {
    USER_LABELS
        .iter()
        .find_map(|key| labels.get(*key))
        .cloned()
        .unwrap_or_default()
}

/// The numeric hints among a job's labels: `hint.<name>` whose value parses as a
/// finite number.
pub fn hints_of(labels: &BTreeMap<String, String>) -> BTreeMap<String, f64> {
    labels
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(HINT_LABEL_PREFIX)?;
            let number: f64 = value.trim().parse().ok()?;
            (!name.is_empty() && number.is_finite()).then(|| (name.to_string(), number))
        })
        .collect()
}

/// A worker's declared speed from its labels (`speed`), 1.0 if absent or invalid.
pub fn speed_of(labels: &BTreeMap<String, String>) -> f64 {
    labels
        .get(SPEED_LABEL)
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(sanitize_speed)
        .unwrap_or(1.0)
}

/// Speeds must be finite and positive; anything else counts as the reference 1.0.
pub fn sanitize_speed(speed: f64) -> f64 {
    if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use crate::job::Usage;
    use crate::spec::JobSpecInput;

    fn finished_job() -> JobRecord {
        let input = JobSpecInput {
            name: "etl".into(),
            command: "/bin/etl".into(),
            labels: [
                ("tenant".to_string(), "acme".to_string()),
                ("hint.rows".to_string(), "2e6".to_string()),
                ("hint.bad".to_string(), "many".to_string()),
            ]
            .into(),
            timeout: "10m".into(),
            ..Default::default()
        };
        let spec = input.validate().expect("valid spec");
        let mut job = JobRecord::new(JobId::generate(), spec, 1_000);
        job.state = JobState::Succeeded;
        job.worker_id = Some(WorkerId::new("w1").expect("valid id"));
        job.attempt = 1;
        job.started_at_ms = Some(3_000);
        job.finished_at_ms = Some(9_000);
        job.usage = Some(Usage {
            runtime_ms: 5_900,
            ..Default::default()
        });
        job
    }

    #[test]
    fn from_job_takes_features_and_measurements() {
        let record = RunRecord::from_job(&finished_job(), 2.0).expect("finished");
        assert_eq!(record.user, "acme");
        assert_eq!(record.name, "etl");
        assert_eq!(record.hints.get("rows"), Some(&2e6));
        assert!(!record.hints.contains_key("bad"));
        assert_eq!(record.requested_time_s, Some(600.0));
        assert_eq!(record.queue_wait_ms, 2_000);
        assert_eq!(record.runtime_ms, 5_900);
        assert_eq!(record.outcome, "succeeded");
        assert!((record.reference_runtime_s() - 11.8).abs() < 1e-9);
        let json = serde_json::to_string(&record).expect("serialises");
        let back: RunRecord = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, record);
    }

    #[test]
    fn unfinished_jobs_are_refused_and_bad_speeds_neutralised() {
        let mut job = finished_job();
        job.state = JobState::Running;
        assert_eq!(
            RunRecord::from_job(&job, 1.0),
            Err(RunRecordError::NotFinished(JobState::Running))
        );
        assert_eq!(sanitize_speed(f64::NAN), 1.0);
        assert_eq!(sanitize_speed(-2.0), 1.0);
        let labels = [("speed".to_string(), "4".to_string())].into();
        assert_eq!(speed_of(&labels), 4.0);
    }

    #[test]
    fn missing_fields_take_defaults_when_parsing() {
        let json = r#"{"v":1,"job_id":"x","submitted_at_ms":5,"runtime_ms":7,"finished_at_ms":12}"#;
        let record: RunRecord = serde_json::from_str(json).expect("parses");
        assert_eq!(record.worker_speed, 1.0);
        assert_eq!(record.requested_slots, 1);
        assert_eq!(record.requested_time_s, None);
    }
}
