//! Output formatting: JSON objects with stable field names, and tables.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use augur_proto::v1 as pb;
use serde_json::{json, Value};

pub fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Pending) => "pending",
        Ok(pb::JobState::Assigned) => "assigned",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::TimedOut) => "timed_out",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

pub fn is_terminal(state: i32) -> bool {
    matches!(
        state_name(state),
        "succeeded" | "failed" | "timed_out" | "cancelled"
    )
}

fn worker_state_name(state: i32) -> &'static str {
    match pb::WorkerState::try_from(state) {
        Ok(pb::WorkerState::Ready) => "ready",
        Ok(pb::WorkerState::Disconnected) => "disconnected",
        Ok(pb::WorkerState::Draining) => "draining",
        _ => "unknown",
    }
}

/// A time in ms since the epoch as RFC 3339 with milliseconds; null for 0.
pub fn time(ms: i64) -> Value {
    if ms <= 0 {
        return Value::Null;
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    Value::String(humantime::format_rfc3339_millis(t).to_string())
}

pub fn job_value(job: &pb::Job) -> Value {
    let spec = job.spec.clone().unwrap_or_default();
    json!({
        "id": job.id,
        "name": spec.name,
        "state": state_name(job.state),
        "attempts": job.attempts,
        "exit_code": job.exit_code,
        "stdout_tail": String::from_utf8_lossy(&job.stdout_tail),
        "stderr_tail": String::from_utf8_lossy(&job.stderr_tail),
        "worker_id": if job.worker_id.is_empty() { Value::Null } else { Value::String(job.worker_id.clone()) },
        "submitted_at": time(job.submitted_at_ms),
        "started_at": time(job.started_at_ms),
        "finished_at": time(job.finished_at_ms),
        "message": job.message,
        "cancel_requested": job.cancel_requested,
        "owner": if job.owner.is_empty() { Value::Null } else { Value::String(job.owner.clone()) },
        "priority": spec.priority,
        "command": spec.command,
        "args": spec.args,
        "labels": spec.labels,
        "timeout": spec.timeout,
        "max_attempts": spec.retry.map(|r| r.max_attempts).unwrap_or(1),
        "resources": spec.resources.map(|r| json!({
            "slots": r.slots,
            "cpu_millis": r.cpu_millis,
            "memory_bytes": r.memory_bytes,
        })),
        "outputs": job.outputs.iter().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

pub fn job_json(job: &pb::Job) -> String {
    job_value(job).to_string()
}

pub fn job_detail(job: &pb::Job) -> String {
    let v = job_value(job);
    let mut out = String::new();
    for key in [
        "id",
        "name",
        "state",
        "attempts",
        "exit_code",
        "worker_id",
        "submitted_at",
        "started_at",
        "finished_at",
        "message",
        "owner",
    ] {
        let text = match &v[key] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        let _ = writeln!(out, "{key:<13} {text}");
    }
    let _ = writeln!(
        out,
        "{:<13} {} {}",
        "command",
        v["command"].as_str().unwrap_or(""),
        job.spec
            .as_ref()
            .map(|s| s.args.join(" "))
            .unwrap_or_default()
    );
    for (label, tail) in [("stdout", &job.stdout_tail), ("stderr", &job.stderr_tail)] {
        if !tail.is_empty() {
            let _ = writeln!(
                out,
                "--- {label} (tail) ---\n{}",
                String::from_utf8_lossy(tail).trim_end()
            );
        }
    }
    out
}

pub fn job_table(jobs: &[pb::Job]) -> String {
    let mut out = format!(
        "{:<26}  {:<20}  {:<10}  {:>8}  {:>4}  {:<12}\n",
        "ID", "NAME", "STATE", "ATTEMPTS", "EXIT", "WORKER"
    );
    for job in jobs {
        let name = job.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
        let exit = job
            .exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let worker = if job.worker_id.is_empty() {
            "-"
        } else {
            &job.worker_id
        };
        let _ = writeln!(
            out,
            "{:<26}  {:<20}  {:<10}  {:>8}  {:>4}  {:<12}",
            job.id,
            name,
            state_name(job.state),
            job.attempts,
            exit,
            worker
        );
    }
    out
}

pub fn worker_value(w: &pb::Worker) -> Value {
    json!({
        "id": w.id,
        "slots": w.slots,
        "running": w.running,
        "labels": w.labels,
        "state": worker_state_name(w.state),
        "executor": w.executor,
        "version": w.version,
        "registered_at": time(w.registered_at_ms),
        "capacity": w.capacity.as_ref().map(|c| json!({
            "cpu_millis": c.cpu_millis,
            "memory_bytes": c.memory_bytes,
        })),
    })
}

/// `4000m/7.8Gi`, or `-` when the worker reported no capacity.
fn capacity_text(capacity: Option<&pb::Capacity>) -> String {
    match capacity {
        Some(c) => format!(
            "{}m/{:.1}Gi",
            c.cpu_millis,
            c.memory_bytes as f64 / (1u64 << 30) as f64
        ),
        None => "-".to_string(),
    }
}

pub fn worker_table(workers: &[pb::Worker]) -> String {
    let mut out = format!(
        "{:<16}  {:<12}  {:>5}  {:>7}  {:<8}  {:<14}  {}\n",
        "WORKER", "STATE", "SLOTS", "RUNNING", "EXECUTOR", "CPU/MEMORY", "LABELS"
    );
    for w in workers {
        let mut labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let _ = writeln!(
            out,
            "{:<16}  {:<12}  {:>5}  {:>7}  {:<8}  {:<14}  {}",
            w.id,
            worker_state_name(w.state),
            w.slots,
            w.running,
            w.executor,
            capacity_text(w.capacity.as_ref()),
            labels.join(",")
        );
    }
    out
}

pub fn cluster_value(s: &pb::ClusterStatusResponse) -> Value {
    json!({
        "leader": s.leader,
        "leader_address": s.leader_address,
        "epoch": s.epoch,
        "workers": s.workers.iter().map(worker_value).collect::<Vec<_>>(),
        "pending_jobs": s.pending_jobs,
        "running_jobs": s.running_jobs,
        "answered_by": s.answered_by,
    })
}
