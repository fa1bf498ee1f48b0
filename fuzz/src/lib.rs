//! Helpers shared by the fuzz targets: a tolerant JSON comparison for
//! round-trip checks and structured (arbitrary-derived) inputs.
//!
//! serde_json (without its `float_roundtrip` feature) may parse a shortest
//! float representation one ULP away from the value that printed it, so
//! round trips compare floats with a relative tolerance and everything else
//! exactly.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use augur_core::job::{JobRecord, JobState, Usage};
use augur_core::spec::{JobSpec, Resources};
use augur_core::{JobId, RetryPolicy, WorkerId};
use serde_json::Value;

/// Whether two JSON values are equal, floats within a relative 1e-12.
pub fn json_close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                    _ => false,
                }
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && json_close(vx, vy))
        }
        _ => a == b,
    }
}

/// A worker id as decode produces it: any string (serde does not validate it).
pub fn worker_id_from(text: String) -> Option<WorkerId> {
    serde_json::from_value(Value::String(text)).ok()
}

/// Any job record a stored value could decode to.
#[derive(Debug, Arbitrary)]
pub struct AnyJobRecord {
    pub id: u128,
    pub name: String,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    pub timeout_ms: Option<u64>,
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
    pub jitter: f64,
    pub slots: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub state: u8,
    pub attempt: u32,
    pub failed_attempts: u32,
    pub lost_attempts: u32,
    pub worker_id: Option<String>,
    pub epoch: i64,
    pub submitted_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub not_before_ms: i64,
    pub cancel_requested: bool,
    pub runtime_ms: Option<u64>,
}

impl AnyJobRecord {
    pub fn into_record(self) -> JobRecord {
        let spec = JobSpec {
            name: self.name,
            command: self.command,
            args: self.args,
            env: self.env,
            working_dir: None,
            labels: self.labels,
            priority: self.priority,
            timeout_ms: self.timeout_ms,
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                initial_backoff_ms: self.initial_backoff_ms,
                max_backoff_ms: self.max_backoff_ms,
                multiplier: self.multiplier,
                jitter: self.jitter,
            },
            resources: Resources {
                slots: self.slots,
                cpu_millis: self.cpu_millis,
                memory_bytes: self.memory_bytes,
            },
            idempotency_key: None,
            constraints: BTreeMap::new(),
        };
        let mut record = JobRecord::new(JobId(self.id.into()), spec, self.submitted_at_ms);
        record.state = JobState::ALL[usize::from(self.state) % JobState::ALL.len()];
        record.attempt = self.attempt;
        record.failed_attempts = self.failed_attempts;
        record.lost_attempts = self.lost_attempts;
        record.worker_id = self.worker_id.and_then(worker_id_from);
        record.epoch = self.epoch;
        record.started_at_ms = self.started_at_ms;
        record.finished_at_ms = self.finished_at_ms;
        record.not_before_ms = self.not_before_ms;
        record.cancel_requested = self.cancel_requested;
        record.usage = self.runtime_ms.map(|runtime_ms| Usage {
            runtime_ms,
            ..Usage::default()
        });
        record
    }
}
