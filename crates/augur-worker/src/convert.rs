//! Wire conversions for the worker: assignments in, results out.

use augur_core::JobSpec;
use augur_proto::v1 as pb;

use crate::buffer::BufferedResult;

/// The spec of an assignment. The leader only sends validated specs; validating
/// again costs little and keeps a confused peer from running something odd.
/// It is Augur's own spec, not a submitter's: a scheduled job carries the
/// reserved `augur.schedule*` labels, which are kept.
pub fn spec_from_pb(spec: pb::JobSpec) -> Result<JobSpec, augur_core::ValidationError> {
    augur_core::JobSpecInput::from(spec).validate_internal()
}

/// A buffered result as the Finished message.
pub fn finished_message(r: &BufferedResult) -> pb::Finished {
    let outcome = match r.outcome.as_str() {
        "exited" => pb::Outcome::Exited,
        "timed_out" => pb::Outcome::TimedOut,
        "cancelled" => pb::Outcome::Cancelled,
        "start_failed" => pb::Outcome::StartFailed,
        "oom_killed" => pb::Outcome::OomKilled,
        _ => pb::Outcome::Unspecified,
    };
    pb::Finished {
        attempt: Some(pb::AttemptRef {
            job_id: r.job_id.clone(),
            attempt: r.attempt,
            epoch: r.epoch,
        }),
        outcome: outcome as i32,
        exit_code: r.exit_code,
        signal: r.signal,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        runtime_ms: r.usage.runtime_ms,
        user_cpu_us: r.usage.user_cpu_us,
        system_cpu_us: r.usage.system_cpu_us,
        max_rss_kb: r.usage.max_rss_kb,
        stdout_tail: r.stdout_tail.clone(),
        stderr_tail: r.stderr_tail.clone(),
        message: r.message.clone(),
        outputs: r
            .outputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect(),
        peak_memory_bytes: r.usage.peak_memory_bytes,
        cgroup_cpu_us: r.usage.cgroup_cpu_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression (issue 12): submitters may not set `augur.*` labels, but the
    // leader adds them to a schedule's jobs; the worker must still accept those.
    #[test]
    fn scheduled_assignments_keep_their_reserved_labels() {
        let mut spec = augur_core::JobSpecInput {
            command: "true".into(),
            ..Default::default()
        }
        .validate()
        .expect("valid");
        spec.labels
            .insert("augur.schedule".into(), "nightly".into());
        spec.labels
            .insert("augur.schedule_tick_ms".into(), "1000".into());
        let assigned = spec_from_pb(pb::JobSpec::from(&spec)).expect("accepted");
        assert_eq!(assigned.labels, spec.labels);
    }
}
