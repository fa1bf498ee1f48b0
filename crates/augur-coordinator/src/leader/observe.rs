//! What the leader records about each decision: metrics (with the job's trace
//! id as exemplar) and the phase spans of the job's trace (`job.queue`,
//! `job.place`, `job.dispatch`, `job.report`). Kept apart from the brain so the
//! decision code reads as decisions.

use std::time::SystemTime;

use augur_core::{JobId, JobRecord, JobState, RunRecord, WorkerId};
use augur_placement::{Decision, Policy};
use augur_telemetry::context::{at_ms, record, trace_id, PhaseSpan};
use augur_telemetry::metrics::{
    OutcomeLabel, PolicyLabel, PriorityClass, PriorityLabel, StateLabel,
};
use augur_telemetry::{exemplar, CoordinatorMetrics, KeyValue, SpanKind};

fn job_attributes(job: &JobRecord) -> Vec<KeyValue> {
    vec![
        KeyValue::new("augur.job.id", job.id.to_string()),
        KeyValue::new("cicd.pipeline.task.name", job.spec.name.clone()),
        KeyValue::new(
            "cicd.pipeline.task.run.id",
            format!("{}/{}", job.id, job.attempt),
        ),
        KeyValue::new("augur.job.attempt", i64::from(job.attempt)),
    ]
}

/// Creates this leader's labelled series at zero.
pub fn initialise(metrics: &CoordinatorMetrics, policy: Policy) {
    let label = PolicyLabel {
        policy: policy.name().to_string(),
    };
    let _ = metrics.placement_decisions.get_or_create(&label);
    let _ = metrics.prediction_error_ratio.get_or_create(&label);
}

/// A job was placed on `worker` (`placed` is its record after the assignment):
/// records its queue wait and placement, and starts its `job.dispatch` span,
/// which the worker's `job.execute` span will be a child of.
pub fn placed(
    metrics: &CoordinatorMetrics,
    placed: &JobRecord,
    decision: &Decision<JobId, WorkerId>,
) -> PhaseSpan {
    let now = augur_core::now_ms();
    let ready_at = placed.not_before_ms.max(placed.submitted_at_ms);
    let wait_s = (now - ready_at).max(0) as f64 / 1000.0;
    let trace = trace_id(&placed.trace_context);
    metrics.queue_wait.observe(wait_s, exemplar(trace), None);
    let policy = decision.policy.name();
    metrics
        .placement_decisions
        .get_or_create(&PolicyLabel {
            policy: policy.to_string(),
        })
        .inc();
    let attrs = job_attributes(placed);
    record(
        "job.queue",
        &placed.trace_context,
        at_ms(ready_at),
        at_ms(now),
        attrs.clone(),
    );
    let scores: Vec<String> = decision
        .candidates
        .iter()
        .map(|c| format!("{}={:.3}", c.worker, c.score))
        .collect();
    let mut place_attrs = attrs.clone();
    place_attrs.extend([
        KeyValue::new("augur.placement.policy", policy),
        KeyValue::new("augur.placement.candidates", scores.join(",")),
        KeyValue::new("augur.placement.chosen", decision.worker.to_string()),
    ]);
    if let Some(seconds) = decision.predicted_s {
        place_attrs.push(KeyValue::new("augur.prediction.seconds", seconds));
    }
    if let Some(source) = &decision.prediction_source {
        place_attrs.push(KeyValue::new(
            "augur.prediction.source",
            format!("{source:?}"),
        ));
    }
    if let Some(version) = decision.model_version {
        place_attrs.push(KeyValue::new("augur.model.version", version as i64));
    }
    if let Some(fallback) = &decision.fallback {
        place_attrs.push(KeyValue::new("augur.placement.fallback", fallback.clone()));
    }
    record(
        "job.place",
        &placed.trace_context,
        at_ms(now),
        SystemTime::now(),
        place_attrs,
    );
    let mut dispatch_attrs = attrs;
    dispatch_attrs.push(KeyValue::new(
        "augur.worker.id",
        decision.worker.to_string(),
    ));
    dispatch_attrs.push(KeyValue::new("augur.leader.epoch", placed.epoch));
    PhaseSpan::start_under(
        "job.dispatch",
        &placed.trace_context,
        SpanKind::Producer,
        None,
        dispatch_attrs,
    )
}

/// Predicted over measured runtime of a finished attempt.
pub fn prediction_error(
    metrics: &CoordinatorMetrics,
    policy: Policy,
    predicted_s: f64,
    run: &RunRecord,
) {
    let actual_s = run.runtime_ms as f64 / 1000.0;
    if predicted_s > 0.0 && actual_s > 0.0 {
        metrics
            .prediction_error_ratio
            .get_or_create(&PolicyLabel {
                policy: policy.name().to_string(),
            })
            .observe(predicted_s / actual_s);
    }
}

/// The attempt's process started.
pub fn started(metrics: &CoordinatorMetrics, job: &JobRecord, started_at_ms: i64) {
    let seconds = (started_at_ms - job.submitted_at_ms).max(0) as f64 / 1000.0;
    metrics
        .submit_to_start
        .observe(seconds, exemplar(trace_id(&job.trace_context)), None);
}

/// A result arrived and moved the job from `before` to `after`; returns the
/// `job.report` span, ended once the new record is durable.
pub fn reported(
    metrics: &CoordinatorMetrics,
    before: &JobRecord,
    after: &JobRecord,
    outcome: &str,
) -> PhaseSpan {
    let trace = trace_id(&after.trace_context);
    if let Some(usage) = &after.usage {
        metrics
            .job_runtime
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .observe(usage.runtime_ms as f64 / 1000.0, exemplar(trace), None);
    }
    if after.state == JobState::Failed && outcome == "oom_killed" {
        // Failed by an OOM kill: counted apart, so memory limits that are too
        // tight show up in `augur_jobs_finished_total`.
        count_finished(metrics, "oom_killed");
    } else if after.state.is_terminal() {
        finished(metrics, after);
    } else if after.state == JobState::Pending {
        metrics.job_retries.inc();
    }
    let mut attrs = job_attributes(before);
    attrs.push(KeyValue::new("augur.attempt.outcome", outcome.to_string()));
    attrs.push(KeyValue::new("augur.job.state", after.state.as_str()));
    if let Some(code) = after.exit_code {
        attrs.push(KeyValue::new("process.exit.code", i64::from(code)));
    }
    let mut span = PhaseSpan::start_under(
        "job.report",
        &after.trace_context,
        SpanKind::Consumer,
        None,
        attrs,
    );
    if matches!(after.state, JobState::Failed | JobState::TimedOut) {
        span.fail(after.state.as_str(), after.message.clone());
    }
    span
}

/// A job reached a terminal state.
pub fn finished(metrics: &CoordinatorMetrics, job: &JobRecord) {
    count_finished(metrics, job.state.as_str());
}

fn count_finished(metrics: &CoordinatorMetrics, outcome: &str) {
    metrics
        .jobs_finished
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Queue, running and worker gauges, from counts the brain keeps.
pub struct Gauges {
    pub queued: [i64; 3],
    pub running: i64,
    pub workers_ready: i64,
    pub workers_disconnected: i64,
    pub workers_draining: i64,
}

pub fn gauges(metrics: &CoordinatorMetrics, g: &Gauges) {
    for (class, count) in [
        PriorityClass::High,
        PriorityClass::Normal,
        PriorityClass::Low,
    ]
    .into_iter()
    .zip(g.queued)
    {
        metrics
            .queue_depth
            .get_or_create(&PriorityLabel {
                priority_class: class.as_str(),
            })
            .set(count);
    }
    metrics.jobs_running.set(g.running);
    for (state, count) in [
        ("ready", g.workers_ready),
        ("disconnected", g.workers_disconnected),
        ("draining", g.workers_draining),
    ] {
        metrics
            .workers
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .set(count);
    }
}

/// Index of a priority in `Gauges::queued`.
pub fn class_index(priority: i32) -> usize {
    match PriorityClass::of(priority) {
        PriorityClass::High => 0,
        PriorityClass::Normal => 1,
        PriorityClass::Low => 2,
    }
}

/// The audit line of a job state change: who (this leader), what, result, with
/// the job's trace and span ids so logs and traces join up.
pub fn audit_transition(previous: Option<JobState>, job: &JobRecord, leader: &str) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    let (trace_id, span_id) = augur_telemetry::context::ids(&job.trace_context);
    tracing::info!(
        audit = true,
        caller = leader,
        action = "transition",
        job_id = %job.id,
        from = previous.map_or("submitted", JobState::as_str),
        to = job.state.as_str(),
        attempt = job.attempt,
        worker_id = job.worker_id.as_ref().map(|w| w.as_str()).unwrap_or(""),
        trace_id = %trace_id,
        span_id = %span_id,
        reason = %job.message,
        "job state changed"
    );
}
