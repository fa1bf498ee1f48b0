//! Helpers for tests: small run records.

use augur_core::run::RUN_RECORD_VERSION;
use augur_core::RunRecord;

/// A run of `runtime_s` seconds by `user` of class `name`, submitted at
/// `i` minutes and finished right after.
pub fn record(i: i64, user: &str, name: &str, runtime_s: f64) -> RunRecord {
    let submitted = i * 60_000;
    RunRecord {
        v: RUN_RECORD_VERSION,
        job_id: format!("j{i}"),
        name: name.to_string(),
        command: String::new(),
        user: user.to_string(),
        labels: Default::default(),
        priority: 0,
        requested_slots: 1,
        requested_cpu_millis: 0,
        requested_memory_bytes: 0,
        hints: Default::default(),
        requested_time_s: None,
        submitted_at_ms: submitted,
        worker_id: "w".into(),
        worker_speed: 1.0,
        queue_wait_ms: 0,
        runtime_ms: (runtime_s * 1000.0) as u64,
        outcome: "succeeded".into(),
        attempt: 1,
        finished_at_ms: submitted + (runtime_s * 1000.0) as i64,
        peak_memory_bytes: 0,
        cgroup_cpu_us: 0,
    }
}
