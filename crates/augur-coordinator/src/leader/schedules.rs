//! The leader fires periodic schedules. Each tick becomes one job whose
//! idempotency key is `schedule/{name}/{tick}`, so a tick fired by a leader that
//! died before recording it is not fired twice by the next one; the last tick
//! is then recorded with a fenced write.
//!
//! Ticks that fell while no leader existed (a failover, a full outage) follow the
//! schedule's policy: `fire-once` fires the latest of them, `skip` fires none.
//! A tick counts as on time if it is due now or at most `ON_TIME` ago.

use std::time::Duration;

use augur_core::schedule::{tick_key, Cron, MissedTicks};
use augur_core::{now_ms, JobId, JobRecord};
use augur_store::{Fence, JobStore, ScheduleStore, StoreError, StoredSchedule, Written};
use augur_telemetry::context::PhaseSpan;
use augur_telemetry::{KeyValue, SpanKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::LeaderInput;

/// How late a tick may be found and still count as on time.
const ON_TIME: i64 = 2_000;
/// Longest sleep between looks at the schedules (to see new ones).
const REFRESH: i64 = 1_000;

pub(crate) async fn run(
    store: ScheduleStore,
    (jobs, workflows): (JobStore, augur_store::WorkflowStore),
    fence: Fence,
    brain: mpsc::UnboundedSender<LeaderInput>,
    demote: CancellationToken,
) {
    loop {
        let mut wake = now_ms() + REFRESH;
        match store.list().await {
            Ok(schedules) => {
                for schedule in schedules {
                    let targets = Targets {
                        jobs: &jobs,
                        workflows: &workflows,
                        brain: &brain,
                    };
                    match tick(&store, &targets, &fence, &schedule).await {
                        Ok(Some(next)) => wake = wake.min(next),
                        Ok(None) => {}
                        Err(StoreError::Fenced { .. }) => {
                            demote.cancel();
                            return;
                        }
                        Err(e) => {
                            warn!(schedule = %schedule.record.name, error = %e, "schedule tick failed; retrying")
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot read schedules; retrying"),
        }
        let sleep = Duration::from_millis((wake - now_ms()).clamp(10, REFRESH) as u64);
        tokio::select! {
            _ = demote.cancelled() => return,
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Where a tick's job or workflow run goes.
struct Targets<'a> {
    jobs: &'a JobStore,
    workflows: &'a augur_store::WorkflowStore,
    brain: &'a mpsc::UnboundedSender<LeaderInput>,
}

/// Handles one schedule: fires a due tick if any; returns when the next is due.
async fn tick(
    store: &ScheduleStore,
    targets: &Targets<'_>,
    fence: &Fence,
    schedule: &StoredSchedule,
) -> Result<Option<i64>, StoreError> {
    let record = &schedule.record;
    if record.paused {
        return Ok(None);
    }
    let Ok(cron) = Cron::parse(&record.cron) else {
        warn!(schedule = %record.name, cron = %record.cron, "stored schedule has an invalid cron expression");
        return Ok(None);
    };
    let now = now_ms();
    let last = record.last_tick_ms.unwrap_or(record.created_at_ms);
    let Some(due) = cron.latest_in(last, now) else {
        return Ok(cron.next_after(now.max(last)));
    };
    let on_time = now - due <= ON_TIME;
    if on_time || record.missed == MissedTicks::FireOnce {
        match &record.workflow {
            Some(workflow) => fire_workflow(targets.workflows, schedule, workflow, due).await?,
            None => fire(targets.jobs, targets.brain, schedule, due, on_time).await?,
        }
    } else {
        info!(schedule = %record.name, tick_ms = due, "missed tick skipped by policy");
    }
    let mut updated = record.clone();
    updated.last_tick_ms = Some(due);
    if store
        .record_tick(fence, &updated, schedule.mod_revision)
        .await?
        == Written::Conflict
    {
        // Paused, deleted or edited meanwhile: look again on the next pass.
        return Ok(Some(now));
    }
    Ok(cron.next_after(due))
}

async fn fire(
    jobs: &JobStore,
    brain: &mpsc::UnboundedSender<LeaderInput>,
    schedule: &StoredSchedule,
    tick_ms: i64,
    on_time: bool,
) -> Result<(), StoreError> {
    let record = &schedule.record;
    let mut spec = record.spec.clone();
    spec.idempotency_key = Some(tick_key(&record.name, tick_ms));
    // The worker turns these labels into AUGUR_SCHEDULE and
    // AUGUR_SCHEDULED_AT_MS in the job's environment.
    spec.labels
        .insert("augur.schedule".into(), record.name.clone());
    spec.labels
        .insert("augur.schedule_tick_ms".into(), tick_ms.to_string());
    let mut job = JobRecord::new(JobId::generate(), spec, now_ms());
    job.owner = record.owner.clone();
    let mut span = PhaseSpan::start_under(
        "job.submit",
        &augur_telemetry::context::Carrier::new(),
        SpanKind::Internal,
        None,
        vec![
            KeyValue::new("augur.job.id", job.id.to_string()),
            KeyValue::new("augur.schedule", record.name.clone()),
            KeyValue::new("augur.schedule.tick_ms", tick_ms),
            KeyValue::new("cicd.pipeline.task.name", job.spec.name.clone()),
        ],
    );
    job.trace_context = span.carrier();
    let created = jobs.create(&job).await;
    match &created {
        Ok(augur_store::CreateOutcome::Created) => {
            info!(schedule = %record.name, tick_ms, on_time, job_id = %job.id, "schedule fired");
            let _ = brain.send(LeaderInput::Submitted(Box::new(job)));
        }
        Ok(augur_store::CreateOutcome::Existing(id)) => {
            span.set(vec![KeyValue::new("augur.job.existing", true)]);
            info!(schedule = %record.name, tick_ms, job_id = %id, "tick was already fired");
        }
        Err(e) => span.fail("store", e.to_string()),
    }
    span.end();
    created.map(|_| ())
}

/// A workflow schedule's tick: one run, whose idempotency key is the tick's,
/// so it is started once whatever leader fires it. A file that no longer
/// validates (the rules changed since the schedule was created) skips the
/// tick with a warning.
async fn fire_workflow(
    workflows: &augur_store::WorkflowStore,
    schedule: &StoredSchedule,
    workflow: &augur_core::schedule::ScheduledWorkflow,
    tick_ms: i64,
) -> Result<(), StoreError> {
    let record = &schedule.record;
    let id = augur_store::workflows::new_run_id();
    let mut span = PhaseSpan::start_under(
        "workflow.run",
        &augur_telemetry::context::Carrier::new(),
        SpanKind::Internal,
        None,
        vec![
            KeyValue::new("augur.workflow.id", id.clone()),
            KeyValue::new("augur.workflow.name", workflow.name.clone()),
            KeyValue::new("augur.schedule", record.name.clone()),
            KeyValue::new("augur.schedule.tick_ms", tick_ms),
        ],
    );
    let prepared = crate::api::workflows::prepare_run(
        crate::api::workflows::RunSource {
            file_name: &workflow.file_name,
            source: workflow.source.as_bytes(),
            params: workflow.params.clone(),
        },
        id.clone(),
        record.owner.clone(),
        Some(tick_key(&record.name, tick_ms)),
        span.carrier(),
    );
    let (mut header, file) = match prepared {
        Ok(p) => p,
        Err(status) => {
            warn!(schedule = %record.name, tick_ms, reason = status.message(), "scheduled workflow does not validate; tick skipped");
            span.fail("invalid", status.message().to_string());
            span.end();
            return Ok(());
        }
    };
    header.schedule = Some(record.name.clone());
    let created = workflows.create(&header, &file).await;
    match &created {
        Ok(augur_store::RunCreated::Created) => {
            info!(schedule = %record.name, tick_ms, run_id = %id, "schedule started a workflow run")
        }
        Ok(augur_store::RunCreated::Existing(run)) => {
            span.set(vec![KeyValue::new("augur.workflow.existing", true)]);
            info!(schedule = %record.name, tick_ms, run_id = %run, "tick was already fired");
        }
        Err(e) => span.fail("store", e.to_string()),
    }
    span.end();
    created.map(|_| ())
}
