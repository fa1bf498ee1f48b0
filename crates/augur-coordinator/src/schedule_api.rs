//! The schedule calls of the `JobService`: validation and CRUD against etcd.
//! Any coordinator serves them; only the leader fires ticks (`leader::schedules`).

use augur_core::now_ms;
use augur_core::schedule::{validate_name, Cron, MissedTicks, ScheduleRecord, SCHEDULE_VERSION};
use augur_proto::v1 as pb;
use augur_store::{ScheduleStore, StoredSchedule, Written};
use tonic::Status;

use crate::breaker::Breaker;
use crate::convert::{spec_input, spec_to_pb};

/// The schedule store as the API reaches it: every etcd call goes through the
/// coordinator's circuit breaker.
#[derive(Clone, Copy)]
pub struct Schedules<'a> {
    pub store: &'a ScheduleStore,
    pub breaker: &'a Breaker,
}

fn missed_name(m: MissedTicks) -> &'static str {
    match m {
        MissedTicks::FireOnce => "fire-once",
        MissedTicks::Skip => "skip",
    }
}

/// The wire form of a stored schedule, with its next tick.
pub fn schedule_to_pb(s: &StoredSchedule) -> pb::Schedule {
    let r = &s.record;
    let next = if r.paused {
        0
    } else {
        Cron::parse(&r.cron)
            .ok()
            .and_then(|c| c.next_after(now_ms().max(r.last_tick_ms.unwrap_or(0))))
            .unwrap_or(0)
    };
    pb::Schedule {
        name: r.name.clone(),
        cron: r.cron.clone(),
        // A workflow schedule's spec is an internal placeholder.
        spec: r.workflow.is_none().then(|| spec_to_pb(&r.spec)),
        paused: r.paused,
        missed: missed_name(r.missed).to_string(),
        created_at_ms: r.created_at_ms,
        last_tick_ms: r.last_tick_ms.unwrap_or(0),
        next_tick_ms: next,
        owner: r.owner.clone().unwrap_or_default(),
        workflow: r
            .workflow
            .as_ref()
            .map(|w| w.name.clone())
            .unwrap_or_default(),
    }
}

fn invalid(e: augur_core::ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

pub async fn create(
    schedules: Schedules<'_>,
    request: pb::CreateScheduleRequest,
    owner: Option<String>,
) -> Result<pb::Schedule, Status> {
    validate_name(&request.name).map_err(invalid)?;
    Cron::parse(&request.cron).map_err(invalid)?;
    let missed = if request.missed.is_empty() {
        MissedTicks::FireOnce
    } else {
        request.missed.parse().map_err(invalid)?
    };
    let (spec, workflow) = if request.workflow_source.is_empty() {
        if !request.workflow_params.is_empty() || !request.workflow_file_name.is_empty() {
            return Err(Status::invalid_argument(
                "workflow_params: only with workflow_source",
            ));
        }
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        let spec = spec_input(spec).validate().map_err(invalid)?;
        if spec.idempotency_key.is_some() {
            return Err(Status::invalid_argument(
                "spec.idempotency_key: a schedule sets one per tick itself; leave it empty",
            ));
        }
        (spec, None)
    } else {
        if request.spec.is_some() {
            return Err(Status::invalid_argument(
                "spec: a schedule runs either a job spec or a workflow, not both",
            ));
        }
        let params: std::collections::BTreeMap<String, String> =
            request.workflow_params.into_iter().collect();
        // Checked as a submission would be (nothing is written).
        let (header, _) = crate::api::workflows::prepare_run(
            crate::api::workflows::RunSource {
                file_name: &request.workflow_file_name,
                source: &request.workflow_source,
                params: params.clone(),
            },
            augur_store::workflows::new_run_id(),
            None,
            None,
            Default::default(),
        )?;
        let source = String::from_utf8(request.workflow_source)
            .map_err(|_| Status::invalid_argument("workflow_source: is not UTF-8"))?;
        // The job spec a workflow schedule stores is a placeholder.
        let placeholder = augur_core::JobSpecInput {
            name: header.name.clone(),
            command: "true".into(),
            ..Default::default()
        }
        .validate()
        .map_err(invalid)?;
        let workflow = augur_core::schedule::ScheduledWorkflow {
            name: header.name,
            file_name: request.workflow_file_name,
            source,
            params,
        };
        (placeholder, Some(workflow))
    };
    let record = ScheduleRecord {
        v: SCHEDULE_VERSION,
        name: request.name.clone(),
        cron: request.cron,
        spec,
        paused: false,
        missed,
        created_at_ms: now_ms(),
        last_tick_ms: None,
        owner,
        workflow,
    };
    let Schedules { store, breaker } = schedules;
    match breaker.call(store.create(&record)).await? {
        Written::Done => {}
        Written::Conflict => {
            return Err(Status::already_exists(format!(
                "a schedule named {} exists",
                request.name
            )))
        }
    }
    let stored = breaker
        .call(store.get(&request.name))
        .await?
        .ok_or_else(|| Status::unavailable("schedule vanished right after its creation; retry"))?;
    Ok(schedule_to_pb(&stored))
}

pub async fn list(schedules: Schedules<'_>) -> Result<pb::ListSchedulesResponse, Status> {
    let schedules = schedules.breaker.call(schedules.store.list()).await?;
    Ok(pb::ListSchedulesResponse {
        schedules: schedules.iter().map(schedule_to_pb).collect(),
    })
}

/// The check of who may pause or delete a schedule: its owner or an admin
/// (anyone without authentication); refusals are audited and counted. It is
/// applied to the record a change is conditional on, so it cannot be raced.
pub fn owner_check<'a>(
    auth: &'a crate::auth::Auth,
    caller: &'a crate::auth::Caller,
    action: &'a str,
) -> impl Fn(&ScheduleRecord) -> Result<(), Status> + 'a {
    move |record| {
        if !auth.config().api_auth() || caller.owns(record.owner.as_deref()) {
            return Ok(());
        }
        Err(auth.refuse_not_owner(
            caller,
            action,
            &format!("schedule {}", record.name),
            record.owner.as_deref(),
            "change only its own schedules",
        ))
    }
}

/// Attempts at a conditional change before giving up (a schedule that ticks
/// every second changes under a slow caller).
const CHANGE_ATTEMPTS: usize = 20;

fn busy(name: &str) -> Status {
    Status::unavailable(format!(
        "schedule {name} kept changing while this call tried to change it; retry"
    ))
}

pub async fn delete(
    schedules: Schedules<'_>,
    name: &str,
    allowed: impl Fn(&ScheduleRecord) -> Result<(), Status>,
) -> Result<pb::DeleteScheduleResponse, Status> {
    validate_name(name).map_err(invalid)?;
    let Schedules { store, breaker } = schedules;
    for _ in 0..CHANGE_ATTEMPTS {
        let Some(stored) = breaker.call(store.get(name)).await? else {
            return Err(Status::not_found(format!("no schedule named {name}")));
        };
        allowed(&stored.record)?;
        if breaker
            .call(store.delete_if(name, stored.mod_revision))
            .await?
            == Written::Done
        {
            return Ok(pb::DeleteScheduleResponse {});
        }
    }
    Err(busy(name))
}

pub async fn pause(
    schedules: Schedules<'_>,
    name: &str,
    paused: bool,
    allowed: impl Fn(&ScheduleRecord) -> Result<(), Status>,
) -> Result<pb::Schedule, Status> {
    validate_name(name).map_err(invalid)?;
    let Schedules { store, breaker } = schedules;
    for _ in 0..CHANGE_ATTEMPTS {
        let Some(mut stored) = breaker.call(store.get(name)).await? else {
            return Err(Status::not_found(format!("no schedule named {name}")));
        };
        allowed(&stored.record)?;
        stored.record.paused = paused;
        if !paused {
            // Resuming does not fire the ticks that passed while paused.
            stored.record.last_tick_ms =
                Some(now_ms().max(stored.record.last_tick_ms.unwrap_or(0)));
        }
        if breaker
            .call(store.replace(&stored.record, stored.mod_revision))
            .await?
            == Written::Done
        {
            let fresh = breaker.call(store.get(name)).await?.unwrap_or(stored);
            return Ok(schedule_to_pb(&fresh));
        }
    }
    Err(busy(name))
}
