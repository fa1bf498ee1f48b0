//! The workflow calls of `JobService`. Submission and reads go to etcd from
//! any coordinator (a submitted run is durable once the call returns; the
//! leader finds it through its watch on the active index); cancel and retry
//! change a live run, so the leader's workflow task carries them out (a
//! follower forwards them) and they are answered once the change is durable.

use std::collections::BTreeMap;

use augur_core::auth::Action;
use augur_core::now_ms;
use augur_proto::v1 as pb;
use augur_store::workflows::{check_run_id, counts, new_run_id, state_name, status_name};
use augur_store::{RunCreated, RunHeader, StoredRun};
use augur_telemetry::context::{self, PhaseSpan};
use augur_telemetry::{KeyValue, SpanKind};
use augur_workflow::{RunState, RunStatus};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{forwarded, Api};
use crate::leader::workflows::WorkflowInput;

/// Largest page of `ListWorkflows`.
const MAX_LIST: u32 = 1000;
const DEFAULT_LIST: u32 = 100;
/// Most bytes of parameter overrides one submission may carry.
const MAX_PARAMS_BYTES: usize = 256 * 1024;

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn run_id(id: &str) -> Result<(), Status> {
    check_run_id(id).map_err(|e| Status::invalid_argument(format!("run_id: {e}")))
}

/// A status by its API name (`running`, `timed_out`, ...).
fn parse_status(text: &str) -> Result<RunStatus, Status> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        Status::invalid_argument(format!(
            "state: {text:?} is not one of running, succeeded, failed, cancelled, timed_out"
        ))
    })
}

fn check_idempotency_key(key: &str) -> Result<Option<String>, Status> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > augur_core::spec::MAX_IDEMPOTENCY_KEY {
        return Err(invalid(format!(
            "idempotency_key: is {} bytes, the limit is {}",
            key.len(),
            augur_core::spec::MAX_IDEMPOTENCY_KEY
        )));
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "idempotency_key: must be printable ASCII without spaces",
        ));
    }
    Ok(Some(key.to_string()))
}

/// A run's header as the API shows it (tasks left empty).
pub(crate) fn header_pb(h: &RunHeader) -> pb::WorkflowRun {
    pb::WorkflowRun {
        id: h.id.clone(),
        name: h.name.clone(),
        state: status_name(h.status),
        params: h.params.clone().into_iter().collect(),
        submitted_at_ms: h.submitted_at_ms,
        finished_at_ms: h.finished_at_ms.unwrap_or(0),
        tasks: Vec::new(),
        owner: h.owner.clone().unwrap_or_default(),
        trace_id: context::trace_id(&h.trace_context).unwrap_or_default(),
        counts: h.counts.clone().into_iter().collect(),
    }
}

/// An output as the API shows it: text as it is, a list or JSON value as
/// JSON (a `KEY.lines` output is a JSON list of its lines).
fn shown(value: &augur_workflow::OutputValue) -> String {
    match value {
        augur_workflow::OutputValue::Lines(lines) => {
            serde_json::to_string(lines).unwrap_or_default()
        }
        other => other.render(),
    }
}

/// A run with one entry per task instance, in the workflow's order (DAG
/// tasks topologically, then finally tasks).
pub(crate) fn run_pb(stored: &StoredRun) -> Result<pb::WorkflowRun, Status> {
    let workflow = augur_workflow::validate(stored.file.clone())
        .map_err(|e| Status::internal(format!("the stored workflow does not validate: {e}")))?;
    let state = stored.state();
    let mut out = header_pb(&stored.header);
    out.counts = counts(&state).into_iter().collect();
    for (task, run) in workflow.tasks.iter().zip(&state.tasks) {
        let depends_on: Vec<String> = task
            .upstream
            .iter()
            .filter_map(|&u| workflow.tasks.get(u).map(|t| t.name.clone()))
            .collect();
        if !run.decided {
            out.tasks.push(pb::WorkflowTask {
                name: task.name.clone(),
                state: "pending".into(),
                finally: task.finally,
                generation: run.generation,
                depends_on,
                ..Default::default()
            });
            continue;
        }
        for (k, i) in run.instances.iter().enumerate() {
            out.tasks.push(pb::WorkflowTask {
                name: task.name.clone(),
                fanned: run.fanned,
                item: i.item.clone().unwrap_or_default(),
                item_index: if run.fanned { k as u32 } else { 0 },
                state: state_name(i.state),
                job_id: i.job_id.clone().unwrap_or_default(),
                attempts: i.attempts,
                outputs: i
                    .outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), shown(v)))
                    .collect(),
                message: i.message.clone().unwrap_or_default(),
                generation: i.generation,
                finally: task.finally,
                depends_on: depends_on.clone(),
            });
        }
    }
    Ok(out)
}

/// A workflow file as submitted, with parameter overrides.
pub(crate) struct RunSource<'a> {
    pub file_name: &'a str,
    pub source: &'a [u8],
    pub params: BTreeMap<String, String>,
}

/// Parses and checks a workflow file and its parameters into the header of
/// a new run (and the file to store with it). Every refusal is
/// `InvalidArgument` naming the task and field.
pub(crate) fn prepare_run(
    source: RunSource<'_>,
    id: String,
    owner: Option<String>,
    idempotency_key: Option<String>,
    trace_context: BTreeMap<String, String>,
) -> Result<(RunHeader, augur_workflow::WorkflowFile), Status> {
    let file_name = if source.file_name.is_empty() {
        "workflow.yaml"
    } else {
        source.file_name
    };
    let file = augur_workflow::file::parse_named(file_name, source.source).map_err(invalid)?;
    let workflow = augur_workflow::validate(file.clone()).map_err(invalid)?;
    let params_bytes: usize = source.params.iter().map(|(k, v)| k.len() + v.len()).sum();
    if params_bytes > MAX_PARAMS_BYTES {
        return Err(invalid(format!(
            "params: are {params_bytes} bytes, the limit is {MAX_PARAMS_BYTES}"
        )));
    }
    let state = RunState::new(&workflow, source.params, id.clone(), now_ms()).map_err(invalid)?;
    let mut header = RunHeader {
        v: 1,
        id,
        name: workflow.name.clone(),
        owner,
        params: BTreeMap::new(),
        status: RunStatus::Running,
        started: false,
        submitted_at_ms: state.submitted_at_ms,
        finished_at_ms: None,
        deadline_ms: None,
        idempotency_key,
        trace_context,
        schedule: None,
        tasks: workflow.tasks.len(),
        counts: BTreeMap::new(),
    };
    header.update_from(&state);
    Ok((header, file))
}

impl Api {
    pub(super) async fn submit_workflow_call(
        &self,
        request: Request<pb::SubmitWorkflowRequest>,
    ) -> Result<Response<pb::SubmitWorkflowResponse>, Status> {
        self.shared.metrics.api("workflow_submit");
        let admitted = self.shared.auth.admit(&request, Action::Submit)?;
        let caller = admitted.caller.name.clone();
        let owner = self.shared.auth.config().api_auth().then(|| caller.clone());
        let parent = context::extract_metadata(request.metadata());
        let request = request.into_inner();
        let mut span = PhaseSpan::start(
            "workflow.run",
            &parent,
            SpanKind::Server,
            None,
            super::rpc_attributes("SubmitWorkflow"),
        );
        let result = self.submit_workflow(request, owner, &mut span).await;
        match &result {
            Ok(r) => {
                info!(audit = true, caller = %caller, action = "workflow_submit", run_id = %r.run_id,
                           existing = r.existing, trace_id = %span.trace_id(), result = "ok", "api call")
            }
            Err(status) => {
                span.fail(
                    &format!("{:?}", status.code()),
                    status.message().to_string(),
                );
                info!(audit = true, caller = %caller, action = "workflow_submit", result = ?status.code(),
                      reason = status.message(), "api call refused");
            }
        }
        span.end();
        result.map(Response::new)
    }

    async fn submit_workflow(
        &self,
        request: pb::SubmitWorkflowRequest,
        owner: Option<String>,
        span: &mut PhaseSpan,
    ) -> Result<pb::SubmitWorkflowResponse, Status> {
        let idempotency_key = check_idempotency_key(&request.idempotency_key)?;
        let params: BTreeMap<String, String> = request.params.into_iter().collect();
        let id = new_run_id();
        span.set(vec![KeyValue::new("augur.workflow.id", id.clone())]);
        let (header, file) = prepare_run(
            RunSource {
                file_name: &request.file_name,
                source: &request.source,
                params,
            },
            id.clone(),
            owner,
            idempotency_key,
            span.carrier(),
        )?;
        span.set(vec![KeyValue::new(
            "augur.workflow.name",
            header.name.clone(),
        )]);
        let created = self
            .shared
            .breaker
            .call(self.shared.leader_stores.workflows.create(&header, &file))
            .await?;
        Ok(match created {
            RunCreated::Created => pb::SubmitWorkflowResponse {
                run_id: id,
                existing: false,
            },
            RunCreated::Existing(existing) => {
                span.set(vec![KeyValue::new("augur.workflow.existing", true)]);
                pb::SubmitWorkflowResponse {
                    run_id: existing,
                    existing: true,
                }
            }
        })
    }

    pub(super) async fn get_workflow_call(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        self.shared.metrics.api("workflow_get");
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let id = request.into_inner().run_id;
        run_id(&id)?;
        self.read_run(&id).await.map(Response::new)
    }

    async fn read_run(&self, id: &str) -> Result<pb::WorkflowRun, Status> {
        let stored = self
            .shared
            .breaker
            .call(self.shared.leader_stores.workflows.get(id))
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no workflow run {id} (never submitted, or removed after its retention)"
                ))
            })?;
        run_pb(&stored)
    }

    pub(super) async fn list_workflows_call(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        self.shared.metrics.api("workflow_list");
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let request = request.into_inner();
        let status = match request.state.as_str() {
            "" => None,
            s => Some(parse_status(s)?),
        };
        let limit = match request.limit {
            0 => DEFAULT_LIST,
            n if n > MAX_LIST => {
                return Err(invalid(format!("limit: {n} is more than {MAX_LIST}")))
            }
            n => n,
        };
        let runs = self
            .shared
            .breaker
            .call(
                self.shared
                    .leader_stores
                    .workflows
                    .list(status, limit as usize),
            )
            .await?;
        Ok(Response::new(pb::ListWorkflowsResponse {
            runs: runs.iter().map(header_pb).collect(),
        }))
    }

    /// A submitter may act only on its own runs; admins on any.
    async fn check_run_owner(
        &self,
        caller: &crate::auth::Caller,
        id: &str,
        action: &str,
    ) -> Result<(), Status> {
        let header = self
            .shared
            .breaker
            .call(self.shared.leader_stores.workflows.header(id))
            .await?
            .ok_or_else(|| Status::not_found(format!("no workflow run {id}")))?;
        if !self.shared.auth.config().api_auth() || caller.owns(header.owner.as_deref()) {
            return Ok(());
        }
        Err(self.shared.auth.refuse_not_owner(
            caller,
            action,
            &format!("workflow run {id}"),
            header.owner.as_deref(),
            "act only on its own runs",
        ))
    }

    /// The checks a call on one run makes first: counted, admitted as
    /// `OperateOwn`, a valid run id, and the caller owns the run (or is an
    /// admin). Returns the caller's name.
    async fn admit_on_run<T>(
        &self,
        request: &Request<T>,
        id: &str,
        action: &'static str,
    ) -> Result<String, Status> {
        self.shared.metrics.api(action);
        let admitted = self.shared.auth.admit(request, Action::OperateOwn)?;
        run_id(id)?;
        self.check_run_owner(&admitted.caller, id, action).await?;
        Ok(admitted.caller.name.clone())
    }

    /// Hands `input` (made with its reply) to the leader's workflow task and
    /// waits for the answer, given once its effect is durable.
    async fn on_leader(
        leader: crate::leader::LeaderHandle,
        input: impl FnOnce(crate::leader::workflows::Reply) -> WorkflowInput,
    ) -> Result<(), Status> {
        let (reply, rx) = oneshot::channel();
        leader.send_workflow(input(reply))?;
        rx.await
            .map_err(|_| Status::unavailable("leadership ended during the call; retry"))?
    }

    pub(super) async fn cancel_workflow_call(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        let id = request.get_ref().run_id.clone();
        let who = self.admit_on_run(&request, &id, "workflow_cancel").await?;
        let Some(leader) = self.shared.leader() else {
            let target = self.leader_to_forward_to().await?;
            let (metadata, _, inner) = request.into_parts();
            let forwarded = forwarded(&metadata, inner);
            return self
                .forward(&target, |mut client| async move {
                    client.cancel_workflow(forwarded).await
                })
                .await;
        };
        let run = id.clone();
        match Self::on_leader(leader, |reply| WorkflowInput::Cancel { run, reply }).await {
            // Cancelling a cancelled run again is not an error.
            Ok(()) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(s),
        }
        info!(audit = true, caller = %who, action = "workflow_cancel", run_id = %id, result = "ok", "api call");
        self.read_run(&id).await.map(Response::new)
    }

    pub(super) async fn retry_workflow_call(
        &self,
        request: Request<pb::RetryWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        let id = request.get_ref().run_id.clone();
        let who = self.admit_on_run(&request, &id, "workflow_retry").await?;
        let Some(leader) = self.shared.leader() else {
            let target = self.leader_to_forward_to().await?;
            let (metadata, _, inner) = request.into_parts();
            let forwarded = forwarded(&metadata, inner);
            return self
                .forward(&target, |mut client| async move {
                    client.retry_workflow(forwarded).await
                })
                .await;
        };
        let from = Some(request.get_ref().from.clone()).filter(|f| !f.is_empty());
        let (run, retry_from) = (id.clone(), from.clone());
        Self::on_leader(leader, |reply| WorkflowInput::Retry {
            run,
            from: retry_from,
            reply,
        })
        .await?;
        info!(audit = true, caller = %who, action = "workflow_retry", run_id = %id,
              from = from.as_deref().unwrap_or(""), result = "ok", "api call");
        self.read_run(&id).await.map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_by_their_api_names() {
        assert_eq!(parse_status("timed_out").ok(), Some(RunStatus::TimedOut));
        assert_eq!(parse_status("running").ok(), Some(RunStatus::Running));
        let e = parse_status("done").expect_err("unknown");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("timed_out"));
    }

    #[test]
    fn idempotency_keys_are_checked() {
        assert_eq!(check_idempotency_key("").ok(), Some(None));
        assert_eq!(
            check_idempotency_key("nightly-2026-12-04").ok(),
            Some(Some("nightly-2026-12-04".to_string()))
        );
        assert!(check_idempotency_key("has space").is_err());
        assert!(check_idempotency_key(&"k".repeat(300)).is_err());
    }
}
