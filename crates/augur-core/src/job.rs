//! The job record: what Augur knows about one job, as stored in etcd.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{JobId, WorkerId};
use crate::spec::JobSpec;

/// Schema version of stored job records.
pub const JOB_RECORD_VERSION: u32 = 1;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Assigned,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Assigned,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::TimedOut,
        JobState::Cancelled,
    ];

    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::TimedOut | JobState::Cancelled
        )
    }

    /// Assigned or running: an attempt is out on a worker.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Assigned | JobState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Assigned => "assigned",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::TimedOut => "timed_out",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?}; expected one of pending, assigned, running, succeeded, failed, timed_out, cancelled"
                )
            })
    }
}

/// Resource usage of a finished attempt.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub runtime_ms: u64,
    /// CPU time of the main process (and the children it waited for), from `wait4`.
    pub user_cpu_us: u64,
    pub system_cpu_us: u64,
    pub max_rss_kb: u64,
    /// Peak memory of the attempt's whole cgroup (daemonised children
    /// included); 0 when it ran without a cgroup. Absent in older records.
    #[serde(default)]
    pub peak_memory_bytes: u64,
    /// CPU time of the attempt's whole cgroup; 0 when it ran without one.
    #[serde(default)]
    pub cgroup_cpu_us: u64,
}

/// Everything Augur knows about one job.
/// Most files an attempt may leave in `$AUGUR_OUTPUTS` (its outputs), and
/// the largest one: what the worker collects, the leader accepts and
/// workflows read.
pub const MAX_OUTPUTS: usize = 16;
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Schema version.
    pub v: u32,
    pub id: JobId,
    pub spec: JobSpec,
    pub state: JobState,
    /// Attempts started so far; the current attempt's number.
    pub attempt: u32,
    /// Attempts that failed through the job's own fault (exit, timeout).
    pub failed_attempts: u32,
    /// Attempts lost with their worker.
    pub lost_attempts: u32,
    pub worker_id: Option<WorkerId>,
    /// Epoch of the leader that made the current assignment.
    pub epoch: i64,
    pub submitted_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// Earliest time the job may be placed (retry backoff).
    pub not_before_ms: i64,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// Why the job is where it is, in words.
    pub message: String,
    pub cancel_requested: bool,
    pub usage: Option<Usage>,
    /// W3C trace context of the submission, carried to every attempt.
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
    /// Name of the API token that submitted the job (`None` when the API ran
    /// without authentication): a submitter may cancel only its own jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// What the last finished attempt wrote into `$AUGUR_OUTPUTS`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Why the current attempt went where it did (set by the leader when it
    /// assigns the attempt; shown by the console).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementNote>,
}

/// A placement decision as recorded with the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementNote {
    pub policy: String,
    pub worker: String,
    /// When the decision was made, unix ms.
    pub at_ms: i64,
    /// Predicted runtime on the chosen worker, seconds.
    #[serde(default)]
    pub predicted_s: Option<f64>,
    /// Where the prediction came from (`model`, or a fallback's reason).
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub model_version: Option<u64>,
    /// What `candidates[].score` means under the policy (lower is better).
    #[serde(default)]
    pub score_meaning: String,
    /// The best candidates, best first.
    #[serde(default)]
    pub candidates: Vec<CandidateNote>,
    /// Set when the policy could not be applied as such (cold start).
    #[serde(default)]
    pub fallback: Option<String>,
}

/// One candidate worker of a placement decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateNote {
    pub worker: String,
    pub score: f64,
}

impl JobRecord {
    /// A freshly submitted job.
    pub fn new(id: JobId, spec: JobSpec, now_ms: i64) -> Self {
        JobRecord {
            v: JOB_RECORD_VERSION,
            id,
            spec,
            state: JobState::Pending,
            attempt: 0,
            failed_attempts: 0,
            lost_attempts: 0,
            worker_id: None,
            epoch: 0,
            submitted_at_ms: now_ms,
            started_at_ms: None,
            finished_at_ms: None,
            not_before_ms: now_ms,
            exit_code: None,
            signal: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            message: String::new(),
            cancel_requested: false,
            usage: None,
            trace_context: BTreeMap::new(),
            owner: None,
            outputs: BTreeMap::new(),
            placement: None,
        }
    }
}
