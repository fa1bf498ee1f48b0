//! Field-for-field mappings between the wire job spec and `augur-core`'s input
//! form. No decisions here: validation stays in `augur-core`.

use augur_core::spec::{ResourcesInput, RetryInput};
use augur_core::{JobSpec, JobSpecInput};

use crate::v1 as pb;

impl From<pb::JobSpec> for JobSpecInput {
    fn from(spec: pb::JobSpec) -> Self {
        let retry = spec.retry.unwrap_or_default();
        let resources = spec.resources.unwrap_or_default();
        JobSpecInput {
            name: spec.name,
            command: spec.command,
            args: spec.args,
            env: spec.env.into_iter().collect(),
            working_dir: spec.working_dir,
            labels: spec.labels.into_iter().collect(),
            priority: spec.priority,
            timeout: spec.timeout,
            retry: RetryInput {
                max_attempts: retry.max_attempts,
                initial_backoff: retry.initial_backoff,
                max_backoff: retry.max_backoff,
                multiplier: retry.multiplier,
            },
            resources: ResourcesInput {
                slots: resources.slots,
                cpu_millis: resources.cpu_millis,
                memory_bytes: resources.memory_bytes,
            },
            idempotency_key: spec.idempotency_key,
            constraints: spec.constraints.into_iter().collect(),
        }
    }
}

impl From<JobSpecInput> for pb::JobSpec {
    fn from(spec: JobSpecInput) -> Self {
        pb::JobSpec {
            name: spec.name,
            command: spec.command,
            args: spec.args,
            env: spec.env.into_iter().collect(),
            working_dir: spec.working_dir,
            labels: spec.labels.into_iter().collect(),
            priority: spec.priority,
            timeout: spec.timeout,
            retry: Some(pb::RetryPolicy {
                max_attempts: spec.retry.max_attempts,
                initial_backoff: spec.retry.initial_backoff,
                max_backoff: spec.retry.max_backoff,
                multiplier: spec.retry.multiplier,
            }),
            resources: Some(pb::Resources {
                slots: spec.resources.slots,
                cpu_millis: spec.resources.cpu_millis,
                memory_bytes: spec.resources.memory_bytes,
            }),
            idempotency_key: spec.idempotency_key,
            constraints: spec.constraints.into_iter().collect(),
        }
    }
}

/// Durations as the input side parses them ("1500ms", "2s").
fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl From<&JobSpec> for pb::JobSpec {
    fn from(spec: &JobSpec) -> Self {
        pb::JobSpec {
            name: spec.name.clone(),
            command: spec.command.clone(),
            args: spec.args.clone(),
            env: spec.env.clone().into_iter().collect(),
            working_dir: spec.working_dir.clone().unwrap_or_default(),
            labels: spec.labels.clone().into_iter().collect(),
            priority: spec.priority,
            timeout: spec.timeout_ms.map(duration_text).unwrap_or_default(),
            retry: Some(pb::RetryPolicy {
                max_attempts: spec.retry.max_attempts,
                initial_backoff: duration_text(spec.retry.initial_backoff_ms),
                max_backoff: duration_text(spec.retry.max_backoff_ms),
                multiplier: spec.retry.multiplier,
            }),
            resources: Some(pb::Resources {
                slots: spec.resources.slots,
                cpu_millis: spec.resources.cpu_millis,
                memory_bytes: spec.resources.memory_bytes,
            }),
            idempotency_key: spec.idempotency_key.clone().unwrap_or_default(),
            constraints: spec.constraints.clone().into_iter().collect(),
        }
    }
}
