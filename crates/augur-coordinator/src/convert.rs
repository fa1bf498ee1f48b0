//! Conversions between the wire types (`augur_proto::v1`) and the domain types
//! (`augur_core`), and the one place where errors become `tonic::Status`.

use augur_core::{
    AttemptOutcome, AttemptReport, JobRecord, JobSpec, JobSpecInput, JobState, Usage, WorkerInfo,
};
use augur_proto::v1 as pb;
use augur_store::StoreError;
use tonic::Status;

/// The wire spec as the user's input, to be validated by `augur-core`.
pub fn spec_input(spec: pb::JobSpec) -> JobSpecInput {
    spec.into()
}

/// A validated spec on the wire (to workers and readers).
pub fn spec_to_pb(spec: &JobSpec) -> pb::JobSpec {
    spec.into()
}

pub fn state_to_pb(state: JobState) -> pb::JobState {
    match state {
        JobState::Pending => pb::JobState::Pending,
        JobState::Assigned => pb::JobState::Assigned,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::TimedOut => pb::JobState::TimedOut,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// How an attempt ended, for the `outcome` label of attempt metrics and spans:
/// `succeeded` (exit 0), `failed` (any other exit or a signal), `timed_out`,
/// `cancelled`, `start_failed` or `oom_killed`.
pub fn attempt_result(finished: &pb::Finished) -> &'static str {
    match pb::Outcome::try_from(finished.outcome) {
        Ok(pb::Outcome::Exited) if finished.exit_code == Some(0) => "succeeded",
        Ok(pb::Outcome::Exited) => "failed",
        Ok(pb::Outcome::TimedOut) => "timed_out",
        Ok(pb::Outcome::Cancelled) => "cancelled",
        Ok(pb::Outcome::StartFailed) => "start_failed",
        Ok(pb::Outcome::OomKilled) => "oom_killed",
        _ => "unknown",
    }
}

/// The lowercase name of a wire job state.
pub fn state_name(value: i32) -> &'static str {
    state_from_pb(value)
        .map(JobState::as_str)
        .unwrap_or("unknown")
}

pub fn state_from_pb(value: i32) -> Result<JobState, Status> {
    match pb::JobState::try_from(value) {
        Ok(pb::JobState::Pending) => Ok(JobState::Pending),
        Ok(pb::JobState::Assigned) => Ok(JobState::Assigned),
        Ok(pb::JobState::Running) => Ok(JobState::Running),
        Ok(pb::JobState::Succeeded) => Ok(JobState::Succeeded),
        Ok(pb::JobState::Failed) => Ok(JobState::Failed),
        Ok(pb::JobState::TimedOut) => Ok(JobState::TimedOut),
        Ok(pb::JobState::Cancelled) => Ok(JobState::Cancelled),
        _ => Err(Status::invalid_argument(format!(
            "states: {value} is not a job state"
        ))),
    }
}

pub fn job_to_pb(job: &JobRecord) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        spec: Some(spec_to_pb(&job.spec)),
        state: state_to_pb(job.state) as i32,
        attempts: job.attempt,
        exit_code: job.exit_code,
        stdout_tail: job.stdout_tail.clone().into_bytes(),
        stderr_tail: job.stderr_tail.clone().into_bytes(),
        worker_id: job
            .worker_id
            .as_ref()
            .map(|w| w.to_string())
            .unwrap_or_default(),
        submitted_at_ms: job.submitted_at_ms,
        started_at_ms: job.started_at_ms.unwrap_or(0),
        finished_at_ms: job.finished_at_ms.unwrap_or(0),
        message: job.message.clone(),
        not_before_ms: job.not_before_ms,
        cancel_requested: job.cancel_requested,
        owner: job.owner.clone().unwrap_or_default(),
        outputs: job
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        trace_id: augur_telemetry::context::trace_id(&job.trace_context).unwrap_or_default(),
        placement: job.placement.as_ref().map(|p| pb::Placement {
            policy: p.policy.clone(),
            worker: p.worker.clone(),
            at_ms: p.at_ms,
            predicted_seconds: p.predicted_s,
            source: p.source.clone().unwrap_or_default(),
            model_version: p.model_version.unwrap_or(0),
            score_meaning: p.score_meaning.clone(),
            candidates: p
                .candidates
                .iter()
                .map(|c| pb::PlacementCandidate {
                    worker: c.worker.clone(),
                    score: c.score,
                })
                .collect(),
            fallback: p.fallback.clone().unwrap_or_default(),
        }),
    }
}

pub fn worker_to_pb(info: &WorkerInfo, running: u32, state: pb::WorkerState) -> pb::Worker {
    pb::Worker {
        id: info.id.to_string(),
        slots: info.slots,
        running,
        labels: info.labels.clone().into_iter().collect(),
        state: state as i32,
        version: info.version.clone(),
        registered_at_ms: info.registered_at_ms,
        executor: info.executor.clone(),
        capacity: info.capacity.map(|c| pb::Capacity {
            cpu_millis: c.cpu_millis,
            memory_bytes: c.memory_bytes,
        }),
    }
}

/// Keeps the last `max` bytes of a tail, cut at a character boundary.
pub fn cap_tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.trim_start_matches('\u{FFFD}').to_string()
}

/// Outputs beyond [`augur_core::job::MAX_OUTPUTS`] or
/// [`augur_core::job::MAX_OUTPUT_BYTES`] (which the worker enforces) make a
/// result unreadable.
/// A result's outputs, checked: UTF-8, bounded. `None`: the result is refused.
fn outputs_from_pb(
    outputs: &std::collections::HashMap<String, Vec<u8>>,
) -> Option<std::collections::BTreeMap<String, String>> {
    if outputs.len() > augur_core::job::MAX_OUTPUTS {
        return None;
    }
    outputs
        .iter()
        .map(|(k, v)| {
            let ok = k.len() <= 64 && v.len() <= augur_core::job::MAX_OUTPUT_BYTES;
            ok.then(|| String::from_utf8(v.clone()).ok().map(|v| (k.clone(), v)))
                .flatten()
        })
        .collect()
}

/// A worker's Finished message as the domain's attempt report.
pub fn report_from_pb(msg: &pb::Finished, max_tail: usize) -> Option<AttemptReport> {
    let attempt = msg.attempt.as_ref()?.attempt;
    let outcome = match pb::Outcome::try_from(msg.outcome).ok()? {
        pb::Outcome::Exited => AttemptOutcome::Exited {
            exit_code: msg.exit_code,
            signal: msg.signal,
        },
        pb::Outcome::TimedOut => AttemptOutcome::TimedOut,
        pb::Outcome::Cancelled => AttemptOutcome::Cancelled,
        pb::Outcome::StartFailed => AttemptOutcome::StartFailed,
        pb::Outcome::OomKilled => AttemptOutcome::OomKilled,
        pb::Outcome::Unspecified => return None,
    };
    Some(AttemptReport {
        attempt,
        outcome,
        started_at_ms: msg.started_at_ms,
        finished_at_ms: msg.finished_at_ms,
        usage: Usage {
            runtime_ms: msg.runtime_ms,
            user_cpu_us: msg.user_cpu_us,
            system_cpu_us: msg.system_cpu_us,
            max_rss_kb: msg.max_rss_kb,
            peak_memory_bytes: msg.peak_memory_bytes,
            cgroup_cpu_us: msg.cgroup_cpu_us,
        },
        stdout_tail: cap_tail(&msg.stdout_tail, max_tail),
        stderr_tail: cap_tail(&msg.stderr_tail, max_tail),
        message: msg.message.clone(),
        outputs: outputs_from_pb(&msg.outputs)?,
    })
}

/// The one mapping from store errors to gRPC statuses.
pub fn store_status(err: StoreError) -> Status {
    match &err {
        // etcd answered, and not because it is unreachable: say what it said
        // with a code the caller can act on, not "unavailable, retry".
        StoreError::Etcd(etcd_client::Error::GRpcStatus(status)) if !err.is_unavailable() => {
            match status.code() {
                tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Status::invalid_argument(
                    format!("the state store refused the request: {}", status.message()),
                ),
                tonic::Code::ResourceExhausted => Status::resource_exhausted(format!(
                    "the state store is out of space or overloaded: {}",
                    status.message()
                )),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    Status::internal(format!(
                        "etcd refused this coordinator's credentials: {}",
                        status.message()
                    ))
                }
                _ => Status::unavailable(format!("state store unavailable: {err}")),
            }
        }
        StoreError::Etcd(_)
        | StoreError::WatchEnded { .. }
        | StoreError::LeaseExpired(_)
        | StoreError::Unavailable(_) => {
            Status::unavailable(format!("state store unavailable: {err}"))
        }
        StoreError::Fenced { .. } => {
            Status::unavailable(format!("leadership changed: {err}; retry"))
        }
        StoreError::AlreadyExists { .. } => {
            Status::already_exists(format!("{err}; submit again for a new id"))
        }
        StoreError::Corrupt { .. } | StoreError::Config(_) => Status::internal(err.to_string()),
    }
}

/// Statuses of the leader's answers (its core decides in domain terms; these
/// are how the shell says it on the wire).
pub mod leader_status {
    use tonic::Status;

    /// A worker stream the core refused (a second stream for an attached id,
    /// or one naming another registration).
    pub fn stream_refused(reason: String) -> Status {
        Status::already_exists(reason)
    }

    /// Sent on every worker stream when leadership ends.
    pub fn stepped_down() -> Status {
        Status::unavailable("leader stepped down")
    }

    /// A cancel the job's state machine does not accept now.
    pub fn cancel_not_applicable(why: String) -> Status {
        Status::failed_precondition(why)
    }

    /// Cancelling a job that already ended otherwise.
    pub fn already_ended(id: &augur_core::JobId, state: augur_core::JobState) -> Status {
        Status::failed_precondition(format!("job {id} already ended as {state}"))
    }

    pub fn no_job(id: &augur_core::JobId) -> Status {
        Status::not_found(format!("no job {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_end_and_stay_valid_utf8() {
        assert_eq!(cap_tail(b"hello world", 5), "world");
        let s = "ééé".as_bytes();
        assert_eq!(cap_tail(s, 3), "é");
    }

    // Regression (issue 12): a colliding job id was reported as a corrupt value
    // (Internal); it is AlreadyExists, and no etcd outage.
    #[test]
    fn already_exists_maps_to_already_exists_not_internal() {
        let status = store_status(StoreError::AlreadyExists {
            key: "/augur/jobs/01J".into(),
            reason: "another job has this id".into(),
        });
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert!(status.message().contains("/augur/jobs/01J"), "{status:?}");
        let corrupt = store_status(StoreError::Corrupt {
            key: "/augur/jobs/01J".into(),
            reason: "bad json".into(),
        });
        assert_eq!(corrupt.code(), tonic::Code::Internal);
    }

    // Regression: every etcd answer was `Unavailable` (retry), even one a
    // retry cannot cure, such as etcd's request size limit.
    #[test]
    fn etcd_answers_keep_a_code_the_caller_can_act_on() {
        let etcd = |code, message: &str| {
            store_status(StoreError::Etcd(etcd_client::Error::GRpcStatus(
                tonic::Status::new(code, message),
            )))
        };
        let too_large = etcd(
            tonic::Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        assert_eq!(too_large.code(), tonic::Code::InvalidArgument);
        assert!(too_large.message().contains("request is too large"));
        let full = etcd(
            tonic::Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        );
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        let creds = etcd(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        );
        assert_eq!(creds.code(), tonic::Code::Internal);
        // Unreachable stays retryable.
        let down = etcd(tonic::Code::Unavailable, "etcdserver: no leader");
        assert_eq!(down.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn spec_round_trips_through_the_wire() {
        let input = JobSpecInput {
            command: "echo".into(),
            timeout: "1500ms".into(),
            ..Default::default()
        };
        let spec = input.validate().unwrap();
        let again = spec_input(spec_to_pb(&spec)).validate().unwrap();
        assert_eq!(spec, again);
    }
}
