//! Runs one job attempt and reports how it ended.
//!
//! [`Executor::Process`] starts the job's command as the leader of its own
//! process group, so that a timeout or a cancellation reaches every process
//! the job started, not only the first one. It waits for the child with
//! `wait4` on its pid, which yields the child's own resource usage; a
//! `getrusage(RUSAGE_CHILDREN)` difference would mix up jobs running
//! side by side. Output is read concurrently into ring buffers that keep only
//! the last [`ProcessConfig::tail_bytes`] bytes of each stream.
//!
//! Before starting anything it applies the worker's hardening: the command
//! must pass the `--allow-command` allowlist ([`CommandAllowlist`]; a refusal
//! is a start failure whose message begins with [`NOT_ALLOWED`]), the spec's
//! argument and environment sizes are checked again against augur-core's caps,
//! the process gets a clean environment ([`environment`]) and, with
//! `--run-as`, drops to an unprivileged user ([`RunAs`]) before `exec`.
//!
//! With cgroups ([`ProcessConfig::cgroups`], see [`crate::cgroup`]) each
//! attempt also runs in a cgroup of its own holding the job's memory, CPU and
//! pids limits; a stop then reaches every process of the cgroup (daemons that
//! left the group too), an OOM kill ends the attempt as
//! [`ExecOutcome::OomKilled`], and the usage includes the cgroup's peak memory
//! and CPU time.
//!
//! [`Executor::Null`] runs nothing and succeeds at once; benchmarks use it to
//! measure the scheduler without process start-up costs.

pub mod allowlist;
#[cfg(test)]
mod cgroup_tests;
pub mod environment;
mod group;
pub mod outputs;
mod process;
pub mod run_as;
pub mod tail;
#[cfg(test)]
mod tests;

use std::time::Duration;

use augur_core::{AttemptOutcome, JobId, JobSpec, Usage};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use allowlist::CommandAllowlist;
pub use run_as::RunAs;
pub use tail::TailBuffer;

/// First word of the message of an attempt refused by the allowlist; stable,
/// so users and tools can recognise the reason in `augur get`.
pub const NOT_ALLOWED: &str = "not_allowed";

/// A hardening setting that stops the worker at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("--run-as: no user {0:?} on this machine")]
    UnknownUser(String),
    #[error("--run-as {user}: cannot look the user up: {error}")]
    UserLookup { user: String, error: String },
    #[error(
        "--run-as {user}: this worker runs as uid {euid}, not root, so it cannot run jobs as \
         uid {uid}; start the worker as root or as that user, or drop --run-as"
    )]
    NotRoot {
        user: String,
        uid: libc::uid_t,
        euid: libc::uid_t,
    },
    #[error("--allow-command {pattern:?}: {reason}")]
    BadPattern {
        pattern: String,
        reason: &'static str,
    },
}

/// Default time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// Default number of bytes kept from the end of stdout and of stderr.
pub const DEFAULT_TAIL_BYTES: usize = 64 * 1024;

/// One attempt of a job, as the worker was asked to run it.
#[derive(Clone, Debug)]
pub struct ExecRequest {
    pub job_id: JobId,
    pub attempt: u32,
    pub spec: JobSpec,
    /// Extra variables set by the worker itself, e.g. `TRACEPARENT`. Applied last,
    /// so they win over everything else.
    pub extra_env: Vec<(String, String)>,
    /// Where the attempt may leave its outputs (`$AUGUR_OUTPUTS`): created
    /// before the process starts (owned by the job's user), read and removed
    /// after it ends. `None`: no outputs.
    pub outputs_dir: Option<std::path::PathBuf>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The process ended on its own: `exit_code` when it exited, `signal` when
    /// a signal ended it (one of the two is set; neither if its status was lost).
    Exited {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    /// The attempt ran past its timeout and was killed.
    TimedOut,
    /// The attempt was cancelled (and killed if it had started).
    Cancelled,
    /// The process could not be started; `ExecResult::message` says why.
    StartFailed,
    /// The attempt failed after the OOM killer ended a process of its cgroup
    /// at the job's memory limit; `ExecResult::message` begins `oom_killed`.
    OomKilled,
}

impl ExecOutcome {
    /// Stable lowercase name, as stored in the result buffer.
    pub fn as_str(&self) -> &'static str {
        match self {
            ExecOutcome::Exited { .. } => "exited",
            ExecOutcome::TimedOut => "timed_out",
            ExecOutcome::Cancelled => "cancelled",
            ExecOutcome::StartFailed => "start_failed",
            ExecOutcome::OomKilled => "oom_killed",
        }
    }

    /// Whether the attempt succeeded (exit code 0).
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            ExecOutcome::Exited {
                exit_code: Some(0),
                ..
            }
        )
    }
}

impl From<&ExecOutcome> for AttemptOutcome {
    fn from(outcome: &ExecOutcome) -> Self {
        match outcome {
            ExecOutcome::Exited { exit_code, signal } => AttemptOutcome::Exited {
                exit_code: *exit_code,
                signal: *signal,
            },
            ExecOutcome::TimedOut => AttemptOutcome::TimedOut,
            ExecOutcome::Cancelled => AttemptOutcome::Cancelled,
            ExecOutcome::StartFailed => AttemptOutcome::StartFailed,
            ExecOutcome::OomKilled => AttemptOutcome::OomKilled,
        }
    }
}

/// Everything the worker reports about a finished attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecResult {
    pub outcome: ExecOutcome,
    /// Unix milliseconds when the process was spawned (or the attempt refused).
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// Wall time, CPU time and peak memory of the job's main process (and of the
    /// descendants it waited for itself), and of its whole cgroup if it had one.
    pub usage: Usage,
    /// Last bytes of stdout, at most [`ProcessConfig::tail_bytes`].
    pub stdout_tail: Vec<u8>,
    /// Last bytes of stderr, at most [`ProcessConfig::tail_bytes`].
    pub stderr_tail: Vec<u8>,
    /// How the attempt ended, in words (e.g. `exited with code 3`).
    pub message: String,
    /// The main process's pid, if one was started.
    pub pid: Option<u32>,
    /// What the attempt left in `$AUGUR_OUTPUTS` (file name → contents).
    pub outputs: std::collections::BTreeMap<String, String>,
}

/// Settings of the process executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Time between SIGTERM and SIGKILL on timeout or cancellation.
    pub kill_grace: Duration,
    /// Bytes kept from the end of stdout and, separately, of stderr.
    pub tail_bytes: usize,
    /// The user job processes run as (`--run-as`); None: the worker's own.
    pub run_as: Option<RunAs>,
    /// Commands this worker starts (`--allow-command`); empty: any.
    pub allowlist: CommandAllowlist,
    /// Where attempt cgroups are made (resolved at start by
    /// [`crate::cgroup::Cgroups::setup`]); None: limits are not enforced.
    pub cgroups: Option<crate::cgroup::Cgroups>,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            kill_grace: DEFAULT_KILL_GRACE,
            tail_bytes: DEFAULT_TAIL_BYTES,
            run_as: None,
            allowlist: CommandAllowlist::default(),
            cgroups: None,
        }
    }
}

/// How a worker runs attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Executor {
    /// Run the job's command as a process group.
    Process(ProcessConfig),
    /// Run nothing and succeed immediately (benchmarks).
    Null,
}

impl Executor {
    /// The executor's name as a worker advertises it (`process` or `null`).
    pub fn kind(&self) -> &'static str {
        match self {
            Executor::Process(_) => "process",
            Executor::Null => "null",
        }
    }

    /// Runs one attempt to its end.
    ///
    /// `started` receives `(pid, started_at_ms)` as soon as the process exists
    /// (`(None, now)` for [`Executor::Null`]); it is dropped unsent when nothing
    /// was started (start failure, or `cancel` already fired). A closed receiver
    /// is ignored.
    ///
    /// Cancelling `cancel` ends the attempt as [`ExecOutcome::Cancelled`]: SIGTERM
    /// to the process group, SIGKILL after the grace period. If the returned
    /// future is dropped before it completes, the process group is killed.
    pub async fn run(
        &self,
        req: ExecRequest,
        cancel: CancellationToken,
        started: oneshot::Sender<(Option<u32>, i64)>,
    ) -> ExecResult {
        match self {
            Executor::Process(config) => process::run(config, req, cancel, started).await,
            Executor::Null => run_null(started),
        }
    }
}

fn run_null(started: oneshot::Sender<(Option<u32>, i64)>) -> ExecResult {
    let now = augur_core::now_ms();
    // The receiver may be gone (the agent gave up on the attempt); nothing to do then.
    let _ = started.send((None, now));
    ExecResult {
        outcome: ExecOutcome::Exited {
            exit_code: Some(0),
            signal: None,
        },
        started_at_ms: now,
        finished_at_ms: now,
        usage: Usage::default(),
        stdout_tail: Vec::new(),
        stderr_tail: Vec::new(),
        message: "null executor: nothing run".to_string(),
        pid: None,
        outputs: Default::default(),
    }
}
