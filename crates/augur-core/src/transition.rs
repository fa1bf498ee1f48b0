//! The job state machine as one pure function: `apply(record, event) -> record`.
//!
//! ```text
//! Pending --Assign--> Assigned --Start--> Running --Finish--> Succeeded | Failed | TimedOut | Cancelled
//!                                                   (an `OomKilled` attempt fails like a non-zero exit)
//!    ^                   |                   |
//!    +---- retry --------+-------------------+   (Finish with a retryable failure, or Lost)
//! ```
//! Invariants (property-tested below): nothing leaves a terminal state; the attempt
//! number never decreases; a pending job has no worker and an active one has one;
//! failures of the job itself never exceed its policy's `max_attempts`.

use crate::ids::WorkerId;
use crate::job::{JobRecord, JobState, Usage};

/// Attempts lost with their worker (lease expired) that are retried regardless of
/// the job's own retry policy, as Nomad reschedules work off a lost node. The
/// attempt after the limit fails the job.
pub const MAX_LOST_ATTEMPTS: u32 = 3;

/// How one attempt ended, as reported by its worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The process exited on its own (`signal` set if a signal ended it).
    Exited {
        exit_code: Option<i32>,
        signal: Option<i32>,
    },
    TimedOut,
    Cancelled,
    /// The process could not be started.
    StartFailed,
    /// The kernel's OOM killer ended the attempt at its cgroup's memory limit
    /// (the job's `resources.memory_bytes`). A failure of the job itself:
    /// counted against `max_attempts`; the job ends `failed` with a message
    /// naming `oom_killed`.
    OomKilled,
}

/// A worker's report of a finished attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptReport {
    pub attempt: u32,
    pub outcome: AttemptOutcome,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub usage: Usage,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub message: String,
    /// What the attempt wrote into `$AUGUR_OUTPUTS` (file name → contents).
    pub outputs: std::collections::BTreeMap<String, String>,
}

/// Something that happens to a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The leader placed the job's next attempt on a worker.
    Assign {
        worker: WorkerId,
        epoch: i64,
        now_ms: i64,
    },
    /// The worker started the attempt's process.
    Start { attempt: u32, now_ms: i64 },
    /// The attempt ended. `jitter_sample` in `[0,1)` randomises a retry's backoff.
    Finish {
        report: AttemptReport,
        now_ms: i64,
        jitter_sample: f64,
    },
    /// The attempt's worker is gone (its lease expired).
    Lost {
        attempt: u32,
        reason: String,
        now_ms: i64,
    },
    /// A user asked for cancellation.
    Cancel { now_ms: i64 },
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Event::Assign { .. } => "assign",
            Event::Start { .. } => "start",
            Event::Finish { .. } => "finish",
            Event::Lost { .. } => "lost",
            Event::Cancel { .. } => "cancel",
        }
    }
}

/// Why an event does not apply to a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("job is already {0} and cannot change")]
    Terminal(JobState),
    #[error("cannot {event} a job in state {state}")]
    WrongState {
        state: JobState,
        event: &'static str,
    },
    #[error("report for attempt {reported} but the job is on attempt {current}")]
    StaleAttempt { current: u32, reported: u32 },
}

/// Applies `event` to `job`, returning the new record. Pure: no clock, no I/O.
pub fn apply(job: &JobRecord, event: &Event) -> Result<JobRecord, TransitionError> {
    if job.state.is_terminal() {
        return Err(TransitionError::Terminal(job.state));
    }
    let wrong = || TransitionError::WrongState {
        state: job.state,
        event: event.name(),
    };
    let check_attempt = |attempt: u32| {
        if attempt == job.attempt {
            Ok(())
        } else {
            Err(TransitionError::StaleAttempt {
                current: job.attempt,
                reported: attempt,
            })
        }
    };
    let mut next = job.clone();
    match event {
        Event::Assign {
            worker,
            epoch,
            now_ms: _,
        } => {
            if job.state != JobState::Pending {
                return Err(wrong());
            }
            next.state = JobState::Assigned;
            // Saturating: counters come from stored records, which may be hostile.
            next.attempt = job.attempt.saturating_add(1);
            next.worker_id = Some(worker.clone());
            next.epoch = *epoch;
            next.started_at_ms = None;
            next.message = format!("attempt {} assigned to {worker}", next.attempt);
        }
        Event::Start { attempt, now_ms } => {
            check_attempt(*attempt)?;
            if job.state != JobState::Assigned {
                return Err(wrong());
            }
            next.state = JobState::Running;
            next.started_at_ms = Some(*now_ms);
            next.message = format!("attempt {attempt} running");
        }
        Event::Finish {
            report,
            now_ms,
            jitter_sample,
        } => {
            check_attempt(report.attempt)?;
            if !job.state.is_active() {
                return Err(wrong());
            }
            finish(&mut next, report, *now_ms, *jitter_sample);
        }
        Event::Lost {
            attempt,
            reason,
            now_ms,
        } => {
            check_attempt(*attempt)?;
            if !job.state.is_active() {
                return Err(wrong());
            }
            next.lost_attempts = next.lost_attempts.saturating_add(1);
            next.worker_id = None;
            if job.cancel_requested {
                end(&mut next, JobState::Cancelled, *now_ms);
                next.message = format!("cancelled; attempt {attempt} lost: {reason}");
            } else if next.lost_attempts >= MAX_LOST_ATTEMPTS {
                end(&mut next, JobState::Failed, *now_ms);
                next.message = format!(
                    "attempt {attempt} lost: {reason}; {MAX_LOST_ATTEMPTS} attempts lost, giving up"
                );
            } else {
                next.state = JobState::Pending;
                next.not_before_ms = *now_ms;
                next.message = format!("attempt {attempt} lost: {reason}; requeued");
            }
        }
        Event::Cancel { now_ms } => match job.state {
            JobState::Pending => {
                end(&mut next, JobState::Cancelled, *now_ms);
                next.cancel_requested = true;
                next.message = "cancelled before it started".into();
            }
            JobState::Assigned | JobState::Running => {
                next.cancel_requested = true;
                next.message = format!("cancel requested for attempt {}", job.attempt);
            }
            _ => return Err(wrong()),
        },
    }
    Ok(next)
}

fn end(job: &mut JobRecord, state: JobState, now_ms: i64) {
    job.state = state;
    job.finished_at_ms = Some(now_ms);
}

fn finish(next: &mut JobRecord, report: &AttemptReport, now_ms: i64, jitter_sample: f64) {
    next.exit_code = None;
    next.signal = None;
    if let AttemptOutcome::Exited { exit_code, signal } = &report.outcome {
        next.exit_code = *exit_code;
        next.signal = *signal;
    }
    next.started_at_ms = Some(report.started_at_ms);
    next.usage = Some(report.usage.clone());
    next.stdout_tail = report.stdout_tail.clone();
    next.outputs = report.outputs.clone();
    next.stderr_tail = report.stderr_tail.clone();
    let attempt = report.attempt;

    let failed_state = match &report.outcome {
        AttemptOutcome::Exited {
            exit_code: Some(0), ..
        } => {
            end(next, JobState::Succeeded, now_ms);
            next.message = format!("attempt {attempt} succeeded");
            return;
        }
        AttemptOutcome::Cancelled => {
            end(next, JobState::Cancelled, now_ms);
            next.message = format!("attempt {attempt} cancelled");
            return;
        }
        AttemptOutcome::TimedOut => JobState::TimedOut,
        AttemptOutcome::Exited { .. } | AttemptOutcome::StartFailed | AttemptOutcome::OomKilled => {
            JobState::Failed
        }
    };
    let why = match &report.outcome {
        AttemptOutcome::Exited {
            exit_code: Some(c), ..
        } => format!("exit code {c}"),
        AttemptOutcome::Exited {
            signal: Some(s), ..
        } => format!("killed by signal {s}"),
        AttemptOutcome::TimedOut => "timed out".to_string(),
        // Stable first word, so users and tools can recognise it in the message.
        AttemptOutcome::OomKilled => "oom_killed: memory limit reached".to_string(),
        _ if !report.message.is_empty() => report.message.clone(),
        _ => "failed".to_string(),
    };
    next.failed_attempts = next.failed_attempts.saturating_add(1);
    if next.cancel_requested {
        end(next, JobState::Cancelled, now_ms);
        next.message = format!("cancelled; attempt {attempt} ended with {why}");
    } else if next.failed_attempts < next.spec.retry.max_attempts {
        let backoff = next
            .spec
            .retry
            .backoff_ms(next.failed_attempts, jitter_sample);
        next.state = JobState::Pending;
        next.worker_id = None;
        next.not_before_ms = now_ms.saturating_add(i64::try_from(backoff).unwrap_or(i64::MAX));
        next.finished_at_ms = None;
        next.message = format!(
            "attempt {attempt} failed ({why}); retry {} of {} in {backoff} ms",
            next.failed_attempts,
            next.spec.retry.max_attempts - 1
        );
    } else {
        end(next, failed_state, now_ms);
        next.message = format!(
            "attempt {attempt} failed ({why}); no attempts left ({} of {})",
            next.failed_attempts, next.spec.retry.max_attempts
        );
    }
}

#[cfg(test)]
mod tests;
