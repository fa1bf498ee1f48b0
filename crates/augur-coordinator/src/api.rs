//! The public `JobService`. Any coordinator serves it: submissions and reads go
//! straight to etcd; calls that need the leader's live view (cancel, workers,
//! cluster status) are handled by the leader's core, or forwarded to the leader
//! when this coordinator follows, within a bound; a follower whose leader does
//! not answer answers cluster status and workers from etcd ([`follower`]).

use std::sync::Arc;

use augur_core::auth::Action;
use augur_core::{now_ms, JobId, JobRecord, JobState};
use augur_proto::v1 as pb;
use augur_proto::v1::job_service_server::JobService;
use augur_store::CreateOutcome;
use augur_telemetry::context::{self, PhaseSpan};
use augur_telemetry::{KeyValue, SpanKind};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::convert::{job_to_pb, spec_input, state_from_pb, store_status, worker_to_pb};

mod follower;
pub(crate) mod workflows;
use crate::leader::{LeaderInput, StatusSnapshot};
use crate::Shared;

/// Largest page of `ListJobs`.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

pub struct Api {
    pub(crate) shared: Arc<Shared>,
}

fn parse_id(text: &str) -> Result<JobId, Status> {
    text.parse::<JobId>()
        .map_err(|e| Status::invalid_argument(format!("job_id: {e}")))
}

/// A request to forward to the leader, carrying the caller's credentials so
/// the leader checks the same token.
pub(crate) fn forwarded<T>(from: &tonic::metadata::MetadataMap, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = from.get("authorization") {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
    }
    request
}

fn rpc_attributes(method: &'static str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", "augur.v1.JobService"),
        KeyValue::new("rpc.method", method),
    ]
}

impl Api {
    async fn submit(
        &self,
        request: pb::SubmitJobRequest,
        owner: Option<String>,
        span: &mut PhaseSpan,
    ) -> Result<pb::SubmitJobResponse, Status> {
        self.shared.metrics.api("submit");
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        let spec = spec_input(spec)
            .validate()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut record = JobRecord::new(JobId::generate(), spec, now_ms());
        record.owner = owner;
        span.set(vec![
            KeyValue::new("augur.job.id", record.id.to_string()),
            KeyValue::new("cicd.pipeline.task.name", record.spec.name.clone()),
        ]);
        record.trace_context = span.carrier();
        let permit = self.shared.breaker.check()?;
        let started = std::time::Instant::now();
        // A transport error that comes back at once (a dead etcd member whose
        // connection or name fails) may go better on another member: try
        // again, at most twice. A slow failure (a timeout: etcd hangs) is not
        // retried, so a hung etcd still answers within one request timeout. A
        // retry after a write that did land finds its own record and answers
        // Created.
        let mut outcome = self.shared.leader_stores.jobs.create(&record).await;
        for pause in [50, 200] {
            let fast = started.elapsed() < std::time::Duration::from_millis(500);
            match &outcome {
                Err(augur_store::StoreError::Etcd(e)) if fast => {
                    tracing::debug!(error = %e, "job create failed at once; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                    outcome = self.shared.leader_stores.jobs.create(&record).await;
                }
                _ => break,
            }
        }
        self.shared.breaker.record(permit, &outcome);
        self.shared
            .metrics
            .etcd("create", started.elapsed().as_secs_f64());
        match outcome.map_err(store_status)? {
            CreateOutcome::Created => {
                self.shared.metrics.jobs_submitted.inc();
                let id = record.id.to_string();
                if let Some(leader) = self.shared.leader() {
                    // Hand it to the leader's core directly: no watch round trip.
                    let _ = leader.send(LeaderInput::Submitted(Box::new(record)));
                }
                Ok(pb::SubmitJobResponse {
                    job_id: id,
                    existing: false,
                })
            }
            CreateOutcome::Existing(id) => {
                span.set(vec![KeyValue::new("augur.job.existing", true)]);
                Ok(pb::SubmitJobResponse {
                    job_id: id.to_string(),
                    existing: true,
                })
            }
        }
    }

    /// A submitter may act only on its own jobs; admins on any.
    async fn check_owner(&self, caller: &crate::auth::Caller, id: &JobId) -> Result<(), Status> {
        if !self.shared.auth.config().api_auth() || caller.role == augur_core::auth::Role::Admin {
            return Ok(());
        }
        let job = self
            .shared
            .breaker
            .call(self.shared.leader_stores.jobs.get(id))
            .await?
            .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        if caller.owns(job.owner.as_deref()) {
            return Ok(());
        }
        Err(self.shared.auth.refuse_not_owner(
            caller,
            "cancel",
            &format!("job {id}"),
            job.owner.as_deref(),
            "cancel only its own jobs",
        ))
    }

    /// Why a pending job waits, from the leader's queue when this node leads
    /// (a follower shows the stored message).
    async fn pending_reason(&self, id: JobId) -> Option<String> {
        let leader = self.shared.leader()?;
        let (reply, rx) = oneshot::channel();
        leader.send(LeaderInput::Explain { id, reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// The schedule store behind this coordinator's circuit breaker.
    fn schedules(&self) -> crate::schedule_api::Schedules<'_> {
        crate::schedule_api::Schedules {
            store: &self.shared.leader_stores.schedules,
            breaker: &self.shared.breaker,
        }
    }

    async fn snapshot(&self) -> Result<Option<StatusSnapshot>, Status> {
        let Some(leader) = self.shared.leader() else {
            return Ok(None);
        };
        let (reply, rx) = oneshot::channel();
        leader.send(LeaderInput::Status { reply })?;
        rx.await
            .map(Some)
            .map_err(|_| Status::unavailable("leadership ended during the call; retry"))
    }
}

#[tonic::async_trait]
impl JobService for Api {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let admitted = self.shared.auth.admit(&request, Action::Submit)?;
        let caller = admitted.caller.name.clone();
        let owner = self.shared.auth.config().api_auth().then(|| caller.clone());
        let parent = context::extract_metadata(request.metadata());
        let mut span = PhaseSpan::start(
            "job.submit",
            &parent,
            SpanKind::Server,
            None,
            rpc_attributes("SubmitJob"),
        );
        let result = self.submit(request.into_inner(), owner, &mut span).await;
        match &result {
            Ok(response) => {
                info!(audit = true, caller = %caller, action = "submit", job_id = %response.job_id,
                      existing = response.existing, trace_id = %span.trace_id(), result = "ok", "api call");
            }
            Err(status) => {
                span.fail(
                    &format!("{:?}", status.code()),
                    status.message().to_string(),
                );
                info!(audit = true, caller = %caller, action = "submit", result = ?status.code(),
                      reason = status.message(), "api call refused");
            }
        }
        span.end();
        result.map(Response::new)
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.shared.metrics.api("get");
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let id = parse_id(&request.into_inner().job_id)?;
        let started = std::time::Instant::now();
        let found = self
            .shared
            .breaker
            .call(self.shared.leader_stores.jobs.get(&id))
            .await;
        self.shared
            .metrics
            .etcd("get", started.elapsed().as_secs_f64());
        match found? {
            Some(mut job) => {
                if job.state == augur_core::JobState::Pending {
                    if let Some(reason) = self.pending_reason(id).await {
                        // Keep what the record says (e.g. why an attempt was
                        // lost) and add where the job stands now.
                        job.message =
                            if job.message.is_empty() || reason.starts_with("unschedulable") {
                                reason
                            } else {
                                format!("{}; now {reason}", job.message)
                            };
                    }
                }
                Ok(Response::new(job_to_pb(&job)))
            }
            None => Err(Status::not_found(format!(
                "no job {id} (never submitted, or removed after its retention)"
            ))),
        }
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.shared.metrics.api("list");
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let request = request.into_inner();
        let states: Vec<JobState> = request
            .states
            .iter()
            .map(|s| state_from_pb(*s))
            .collect::<Result<_, _>>()?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} is more than {MAX_PAGE}"
                )))
            }
            n => n,
        };
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(request.page_token.parse::<JobId>().map_err(|_| {
                Status::invalid_argument("page_token: not a token returned by ListJobs")
            })?)
        };
        let started = std::time::Instant::now();
        let filter = augur_store::JobFilter {
            name_contains: request.name_contains.clone(),
            owner: request.owner.clone(),
            worker_id: request.worker_id.clone(),
            newest_first: request.newest_first,
            submitted_after_ms: request.submitted_after_ms,
            submitted_before_ms: request.submitted_before_ms,
        };
        let page = self
            .shared
            .breaker
            .call(self.shared.leader_stores.jobs.list_filtered(
                &states,
                &filter,
                page_size as usize,
                after.as_ref(),
            ))
            .await;
        self.shared
            .metrics
            .etcd("list", started.elapsed().as_secs_f64());
        let page = page?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.jobs.iter().map(job_to_pb).collect(),
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        self.shared.metrics.api("cancel");
        let admitted = self.shared.auth.admit(&request, Action::OperateOwn)?;
        let who = admitted.caller.name.clone();
        let id = parse_id(&request.get_ref().job_id)?;
        self.check_owner(&admitted.caller, &id).await?;
        let Some(leader) = self.shared.leader() else {
            let target = self.leader_to_forward_to().await?;
            let (metadata, _, inner) = request.into_parts();
            let forwarded = forwarded(&metadata, inner);
            return self
                .forward(&target, |mut client| async move {
                    client.cancel_job(forwarded).await
                })
                .await;
        };
        let (reply, rx) = oneshot::channel();
        leader.send(LeaderInput::Cancel { id, reply })?;
        let job = rx
            .await
            .map_err(|_| Status::unavailable("leadership ended during the call; retry"))??;
        info!(audit = true, caller = %who, action = "cancel", job_id = %id,
              state = crate::convert::state_name(job.state), result = "ok", "api call");
        Ok(Response::new(pb::CancelJobResponse { job: Some(job) }))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.shared.metrics.api("list_workers");
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        match self.snapshot().await? {
            Some(s) => Ok(Response::new(pb::ListWorkersResponse {
                workers: s.workers,
            })),
            None => self.follower_list_workers(request).await,
        }
    }

    async fn drain_worker(
        &self,
        request: Request<pb::DrainWorkerRequest>,
    ) -> Result<Response<pb::DrainWorkerResponse>, Status> {
        self.shared.metrics.api("drain");
        let who = self.shared.auth.admit_name(&request, Action::Operate)?;
        let request = request.into_inner();
        let id = augur_core::WorkerId::new(request.worker_id.clone())
            .map_err(|e| Status::invalid_argument(format!("worker_id: {e}")))?;
        let changed = self
            .shared
            .breaker
            .call(
                self.shared
                    .leader_stores
                    .registry
                    .set_draining(&id, !request.cancel),
            )
            .await?;
        if !changed {
            return Err(Status::not_found(format!("no registered worker {id}")));
        }
        info!(audit = true, caller = %who, action = if request.cancel { "undrain" } else { "drain" },
              worker_id = %id, result = "ok", "api call");
        let worker = self
            .shared
            .breaker
            .call(self.shared.leader_stores.registry.get(&id))
            .await?
            .map(|info| {
                let state = if info.draining {
                    pb::WorkerState::Draining
                } else {
                    pb::WorkerState::Ready
                };
                worker_to_pb(&info, 0, state)
            });
        Ok(Response::new(pb::DrainWorkerResponse { worker }))
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.shared.metrics.api("schedule");
        let who = self.shared.auth.admit_name(&request, Action::Submit)?;
        let owner = self.shared.auth.config().api_auth().then(|| who.clone());
        let request = request.into_inner();
        let name = request.name.clone();
        let result = crate::schedule_api::create(self.schedules(), request, owner).await;
        info!(audit = true, caller = %who, action = "schedule_create", schedule = %name,
              result = ?result.as_ref().map(|_| "ok").map_err(|s| s.code()), "api call");
        result.map(Response::new)
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        self.shared.metrics.api("schedule");
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        crate::schedule_api::list(self.schedules())
            .await
            .map(Response::new)
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        self.shared.metrics.api("schedule");
        let admitted = self.shared.auth.admit(&request, Action::OperateOwn)?;
        let who = admitted.caller.name.clone();
        let name = request.into_inner().name;
        let allowed = crate::schedule_api::owner_check(
            &self.shared.auth,
            &admitted.caller,
            "schedule_delete",
        );
        let result = crate::schedule_api::delete(self.schedules(), &name, allowed).await;
        info!(audit = true, caller = %who, action = "schedule_delete", schedule = %name,
              result = ?result.as_ref().map(|_| "ok").map_err(|s| s.code()), "api call");
        result.map(Response::new)
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::Schedule>, Status> {
        self.shared.metrics.api("schedule");
        let admitted = self.shared.auth.admit(&request, Action::OperateOwn)?;
        let who = admitted.caller.name.clone();
        let request = request.into_inner();
        let action = if request.paused {
            "schedule_pause"
        } else {
            "schedule_resume"
        };
        let allowed = crate::schedule_api::owner_check(&self.shared.auth, &admitted.caller, action);
        let result =
            crate::schedule_api::pause(self.schedules(), &request.name, request.paused, allowed)
                .await;
        info!(audit = true, caller = %who, action = if request.paused { "schedule_pause" } else { "schedule_resume" },
              schedule = %request.name, result = ?result.as_ref().map(|_| "ok").map_err(|s| s.code()), "api call");
        result.map(Response::new)
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.shared.metrics.api("cluster_status");
        let _admitted = self.shared.auth.admit(&request, Action::Read)?;
        let leader = self.current_leader().await?;
        let Some(snapshot) = self.snapshot().await? else {
            return self.follower_cluster_status(request, leader).await;
        };
        Ok(self.status_response(
            leader,
            snapshot.workers,
            snapshot.pending,
            snapshot.running,
            snapshot.queued_by_class,
        ))
    }

    async fn submit_workflow(
        &self,
        request: Request<pb::SubmitWorkflowRequest>,
    ) -> Result<Response<pb::SubmitWorkflowResponse>, Status> {
        self.submit_workflow_call(request).await
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        self.get_workflow_call(request).await
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        self.list_workflows_call(request).await
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        self.cancel_workflow_call(request).await
    }

    async fn retry_workflow(
        &self,
        request: Request<pb::RetryWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        self.retry_workflow_call(request).await
    }
}
