//! The leader drives workflow runs: one task of the term feeds each run's
//! pure state machine (`augur_workflow::RunState::handle`) and carries out
//! its effects. Every change is written to etcd (fenced) before anything
//! follows from it: a task instance's job is created in the very transaction
//! that records the instance as running (deterministic idempotency key
//! `wf/{run}/{task}/{item}[/r{n}]`), jobs are handed to the leader's core only
//! once that transaction committed, and results reach a run only once the
//! job's terminal record is durable (the writer tells this task). A new
//! leader loads every run of the active index, asks etcd about each running
//! instance's job, and resumes; so a leader killed at any point neither loses
//! nor doubles a task instance.

mod persist;
#[cfg(test)]
mod persist_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use augur_core::{now_ms, JobId, JobRecord, JobSpec, JobState};
use augur_store::workflows::status_name;
use augur_store::{Fence, JobStore, StoreError, StoredRun, WorkflowStore};
use augur_telemetry::context::PhaseSpan;
use augur_telemetry::metrics::{OutcomeLabel, StateLabel, WORKFLOW_TASK_STATES};
use augur_telemetry::{CoordinatorMetrics, KeyValue, SpanKind};
use augur_workflow::{Effect, Input, InstanceState, JobOutcome, RunOutcome, RunState, Workflow};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{error, info, warn};

use super::LeaderInput;
use persist::Persisted;

/// How an API call on a run is answered (once its effect is durable).
pub(crate) type Reply = oneshot::Sender<Result<(), Status>>;

/// What reaches the workflow task.
pub(crate) enum WorkflowInput {
    /// A task job's terminal record is durable.
    JobDone(Box<JobRecord>),
    Cancel {
        run: String,
        reply: Reply,
    },
    Retry {
        run: String,
        from: Option<String>,
        reply: Reply,
    },
}

/// Label keys a task job carries (the worker turns them into variables).
pub(crate) const LABEL_RUN: &str = "augur.workflow";
const LABEL_TASK: &str = "augur.workflow_task";
const LABEL_ITEM: &str = "augur.workflow_item";
const LABEL_ITEM_INDEX: &str = "augur.workflow_item_index";

/// Writes committed before their jobs are handed on (bounds the wait of a
/// wide fan-out's first jobs).
const WRITES_PER_CHUNK: usize = 256;
/// Inputs handled before writing.
const MAX_INPUTS_PER_PASS: usize = 20_000;
/// Concurrent job look-ups while loading a run.
const LOOKUPS: usize = 32;

/// One run this leader drives.
struct Live {
    workflow: Arc<Workflow>,
    state: RunState,
    persisted: Persisted,
    /// Jobs created since the last write, by (task, instance).
    new_jobs: BTreeMap<(usize, usize), JobRecord>,
    cancels: Vec<JobId>,
    replies: Vec<Reply>,
    finished: Option<RunOutcome>,
}

pub(crate) struct Driver {
    pub store: WorkflowStore,
    pub jobs: JobStore,
    pub fence: Fence,
    pub brain: mpsc::UnboundedSender<LeaderInput>,
    pub metrics: Arc<CoordinatorMetrics>,
    runs: HashMap<String, Live>,
    by_job: HashMap<JobId, (String, usize, usize)>,
    dirty: BTreeSet<String>,
}

/// Ends the term on a failed fence; other store errors are retried.
enum Stop {
    Fenced,
}

pub(crate) async fn run(
    mut driver: Driver,
    mut rx: mpsc::UnboundedReceiver<WorkflowInput>,
    demote: CancellationToken,
) {
    let (ids, revision) = loop {
        match driver.store.active().await {
            Ok(found) => break found,
            Err(e) => {
                warn!(error = %e, "cannot read the active workflow runs; retrying");
                tokio::select! {
                    _ = demote.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        }
    };
    let mut watch = match driver.store.watch_active(revision).await {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot watch the active workflow runs; stepping down to reload");
            demote.cancel();
            return;
        }
    };
    if !ids.is_empty() {
        info!(runs = ids.len(), "resuming workflow runs");
    }
    for id in ids {
        driver.load(&id, true).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Err(Stop::Fenced) = driver.flush().await {
            error!("fencing guard failed writing a workflow run: no longer leader");
            demote.cancel();
            return;
        }
        driver
            .metrics
            .workflow_runs_active
            .set(driver.runs.len() as i64);
        tokio::select! {
            _ = demote.cancelled() => return,
            input = rx.recv() => {
                let Some(input) = input else { return };
                driver.input(input).await;
                let mut n = 1;
                while n < MAX_INPUTS_PER_PASS {
                    match rx.try_recv() {
                        Ok(input) => driver.input(input).await,
                        Err(_) => break,
                    }
                    n += 1;
                }
            }
            ids = watch.next() => match ids {
                Ok(ids) => {
                    for id in ids {
                        if !driver.runs.contains_key(&id) {
                            driver.load(&id, true).await;
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "workflow watch ended; stepping down to reload");
                    demote.cancel();
                    return;
                }
            },
            _ = tick.tick() => {
                // Only runs past their deadline change on a tick.
                let now = now_ms();
                let due: Vec<String> = driver
                    .runs
                    .iter()
                    .filter(|(_, l)| l.state.deadline_ms.is_some_and(|d| now >= d))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    driver.feed(&id, Input::Tick);
                }
            }
        }
    }
}

fn outcome_of(state: JobState) -> JobOutcome {
    match state {
        JobState::Succeeded => JobOutcome::Succeeded,
        JobState::Cancelled => JobOutcome::Cancelled,
        _ => JobOutcome::Failed,
    }
}

/// A finished job as the run's input: its outputs parsed (unreadable ones
/// fail the instance, saying why).
fn job_finished(task: &str, item: Option<usize>, job: &JobRecord) -> Input {
    let files: Vec<(String, Vec<u8>)> = job
        .outputs
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    let (outcome, outputs, message) = match augur_workflow::outputs::parse_outputs(&files) {
        Ok(outputs) => {
            let message = (job.state != JobState::Succeeded && !job.message.is_empty())
                .then(|| job.message.clone());
            (outcome_of(job.state), outputs, message)
        }
        Err(e) => (
            JobOutcome::Failed,
            Default::default(),
            Some(format!("outputs: {e}")),
        ),
    };
    Input::JobFinished {
        task: task.to_string(),
        item,
        outcome,
        outputs,
        attempts: job.attempt,
        message,
    }
}

impl Driver {
    pub fn new(
        store: WorkflowStore,
        jobs: JobStore,
        fence: Fence,
        brain: mpsc::UnboundedSender<LeaderInput>,
        metrics: Arc<CoordinatorMetrics>,
    ) -> Driver {
        Driver {
            store,
            jobs,
            fence,
            brain,
            metrics,
            runs: HashMap::new(),
            by_job: HashMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    async fn input(&mut self, input: WorkflowInput) {
        match input {
            WorkflowInput::JobDone(job) => self.job_done(&job),
            WorkflowInput::Cancel { run, reply } => {
                if !self.runs.contains_key(&run) {
                    let _ = reply.send(Err(self.not_running(&run).await));
                    return;
                }
                if let Some(why) = self.feed(&run, Input::Cancel) {
                    let _ = reply.send(Err(Status::failed_precondition(why)));
                } else if let Some(live) = self.runs.get_mut(&run) {
                    live.replies.push(reply);
                }
            }
            WorkflowInput::Retry { run, from, reply } => {
                if !self.runs.contains_key(&run) {
                    self.load(&run, false).await;
                }
                if !self.runs.contains_key(&run) {
                    let _ = reply.send(Err(Status::unavailable(format!(
                        "workflow run {run} could not be loaded; retry"
                    ))));
                    return;
                }
                if let Some(why) = self.feed(&run, Input::Retry { from }) {
                    let _ = reply.send(Err(Status::failed_precondition(why)));
                    if self.runs.get(&run).is_some_and(|l| l.state.is_finished()) {
                        self.forget(&run);
                    }
                } else if let Some(live) = self.runs.get_mut(&run) {
                    live.replies.push(reply);
                    self.metrics
                        .workflow_runs_active
                        .set(self.runs.len() as i64);
                }
            }
        }
    }

    /// Why a run this leader does not drive cannot be cancelled.
    async fn not_running(&self, run: &str) -> Status {
        match self.store.get(run).await {
            Ok(Some(stored)) if stored.header.status == augur_workflow::RunStatus::Cancelled => {
                Status::already_exists("the run was already cancelled")
            }
            Ok(Some(stored)) => Status::failed_precondition(format!(
                "workflow run {run} already ended: {}",
                status_name(stored.header.status)
            )),
            Ok(None) => Status::not_found(format!("no workflow run {run}")),
            Err(e) => crate::convert::store_status(e),
        }
    }

    fn job_done(&mut self, job: &JobRecord) {
        let Some((run, t, k)) = self.by_job.remove(&job.id) else {
            return;
        };
        let Some(live) = self.runs.get(&run) else {
            return;
        };
        let Some(task) = live.workflow.tasks.get(t) else {
            return;
        };
        let Some(run_task) = live.state.tasks.get(t) else {
            return;
        };
        // A job of an instance a retry has reset since is not its result.
        let current = run_task.instances.get(k).and_then(|i| i.job_id.as_deref())
            == Some(job.id.to_string().as_str());
        if !current {
            return;
        }
        let input = job_finished(&task.name, run_task.fanned.then_some(k), job);
        self.feed(&run, input);
    }

    /// Applies one input to a run and carries out its effects; returns the
    /// reason when the engine refused it.
    fn feed(&mut self, run: &str, input: Input) -> Option<String> {
        let live = self.runs.get_mut(run)?;
        let effects = live.state.handle(&live.workflow, input, now_ms());
        let mut refused = None;
        for effect in effects {
            match effect {
                Effect::CreateJob {
                    task, item, spec, ..
                } => {
                    let Some(t) = live.workflow.index(&task) else {
                        continue;
                    };
                    let k = item.unwrap_or(0);
                    let job = build_job(live, t, k, *spec);
                    live.state.set_job(t, k, job.id.to_string());
                    self.by_job.insert(job.id, (run.to_string(), t, k));
                    live.new_jobs.insert((t, k), job);
                }
                Effect::CancelJob { task, item } => {
                    let id = live
                        .workflow
                        .index(&task)
                        .and_then(|t| live.state.tasks.get(t))
                        .and_then(|r| r.instances.get(item.unwrap_or(0)))
                        .and_then(|i| i.job_id.as_deref())
                        .and_then(|j| j.parse::<JobId>().ok());
                    if let Some(id) = id {
                        live.cancels.push(id);
                    }
                }
                Effect::RunFinished(outcome) => live.finished = Some(outcome),
                Effect::Rejected(why) => refused = Some(why),
            }
        }
        self.dirty.insert(run.to_string());
        refused
    }

    /// Loads a run from etcd and, when `resume`, carries it on: results of
    /// jobs that ended while no leader drove it are applied, and whatever can
    /// start starts. A run that ended is only loaded when not resuming (a
    /// retry); one found ended while resuming leaves the active index.
    async fn load(&mut self, run: &str, resume: bool) {
        let stored = match self.store.get(run).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(e) => {
                warn!(run_id = run, error = %e, "cannot load workflow run");
                return;
            }
        };
        let workflow = match augur_workflow::validate(stored.file.clone()) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                error!(run_id = run, error = %e, "stored workflow no longer validates; the run is left as it is");
                return;
            }
        };
        let state = stored.state();
        let live = Live {
            workflow,
            persisted: Persisted {
                header: stored.header.clone(),
                tasks: state.tasks.clone(),
            },
            state,
            new_jobs: BTreeMap::new(),
            cancels: Vec::new(),
            replies: Vec::new(),
            finished: None,
        };
        let finished = live.state.is_finished();
        self.runs.insert(run.to_string(), live);
        if finished {
            if resume {
                // Ended, but its active-index entry outlived it (a leader
                // died between the two writes): drop it now.
                let _ = self
                    .store
                    .commit(
                        &self.fence,
                        &[augur_store::WorkflowWrite::Ended {
                            run: run.to_string(),
                        }],
                    )
                    .await;
                self.runs.remove(run);
            }
            return;
        }
        self.reconcile(run, &stored).await;
        let started = self.runs.get(run).is_some_and(|l| l.state.started);
        self.feed(
            run,
            if started {
                Input::Resume
            } else {
                Input::Started
            },
        );
        self.feed(run, Input::Tick);
    }

    /// Running instances' jobs: those that ended are applied, the others
    /// are followed.
    async fn reconcile(&mut self, run: &str, stored: &StoredRun) {
        let running: Vec<(usize, usize, Option<JobId>)> = stored
            .instances
            .iter()
            .filter(|(_, i)| i.state == InstanceState::Running)
            .map(|(&(t, k), i)| (t, k, i.job_id.as_deref().and_then(|j| j.parse().ok())))
            .collect();
        let jobs = self.jobs.clone();
        let found: Vec<_> = futures::stream::iter(running)
            .map(|(t, k, id)| {
                let jobs = jobs.clone();
                async move {
                    let job = match id {
                        Some(id) => jobs.get(&id).await.map_err(|e| e.to_string()),
                        None => Ok(None),
                    };
                    (t, k, id, job)
                }
            })
            .buffer_unordered(LOOKUPS)
            .collect()
            .await;
        for (t, k, id, job) in found {
            let Some(live) = self.runs.get(run) else {
                return;
            };
            let Some(task) = live.workflow.tasks.get(t) else {
                continue;
            };
            let item = live.state.tasks.get(t).and_then(|r| r.fanned.then_some(k));
            let name = task.name.clone();
            match (id, job) {
                (Some(id), Ok(Some(job))) if !job.state.is_terminal() => {
                    self.by_job.insert(id, (run.to_string(), t, k));
                }
                (_, Ok(Some(job))) => {
                    self.feed(run, job_finished(&name, item, &job));
                }
                (_, Ok(None)) => {
                    self.feed(
                        run,
                        Input::JobFinished {
                            task: name,
                            item,
                            outcome: JobOutcome::Failed,
                            outputs: Default::default(),
                            attempts: 0,
                            message: Some(
                                "its job is gone (removed after its retention?)".to_string(),
                            ),
                        },
                    );
                }
                (Some(id), Err(e)) => {
                    // Followed all the same: its result will come.
                    warn!(run_id = run, job_id = %id, error = %e, "cannot read a task's job");
                    self.by_job.insert(id, (run.to_string(), t, k));
                }
                (None, Err(_)) => {}
            }
        }
    }

    fn forget(&mut self, run: &str) {
        if let Some(live) = self.runs.remove(run) {
            for t in &live.state.tasks {
                for i in &t.instances {
                    if let Some(id) = i.job_id.as_deref().and_then(|j| j.parse::<JobId>().ok()) {
                        self.by_job.remove(&id);
                    }
                }
            }
        }
    }

    /// Writes what changed in every run touched since the last pass, then
    /// does what follows from it.
    async fn flush(&mut self) -> Result<(), Stop> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let dirty = std::mem::take(&mut self.dirty);
        let mut writes = Vec::new();
        let mut applied = Vec::new();
        for id in &dirty {
            let Some(live) = self.runs.get_mut(id) else {
                continue;
            };
            let (w, a) = persist::diff(&live.state, &live.persisted, &mut live.new_jobs);
            writes.extend(w);
            applied.push((id.clone(), a));
        }
        let mut failed: Option<StoreError> = None;
        for chunk in writes.chunks(WRITES_PER_CHUNK) {
            match self.store.commit(&self.fence, chunk).await {
                Ok(_) => {
                    // The jobs this chunk created are durable: hand them on.
                    for write in chunk {
                        if let augur_store::WorkflowWrite::Instance { job: Some(job), .. } = write {
                            let _ = self.brain.send(LeaderInput::Submitted(job.clone()));
                        }
                    }
                }
                Err(StoreError::Fenced { .. }) => return Err(Stop::Fenced),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            warn!(error = %e, runs = dirty.len(), "writing workflow runs failed; reloading them");
            for id in &dirty {
                if let Some(live) = self.runs.get_mut(id) {
                    for reply in live.replies.drain(..) {
                        let _ = reply.send(Err(Status::unavailable(format!(
                            "writing the run failed ({e}); retry"
                        ))));
                    }
                }
                self.forget(id);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            for id in &dirty {
                self.load(id, true).await;
            }
            return Ok(());
        }
        for (id, a) in applied {
            let Some(live) = self.runs.get_mut(&id) else {
                continue;
            };
            let before = live.persisted.header.counts.clone();
            live.persisted.apply(&live.state, a);
            count_tasks(&self.metrics, &before, &live.persisted.header.counts);
            for job in live.cancels.drain(..) {
                let (reply, _) = oneshot::channel();
                let _ = self.brain.send(LeaderInput::Cancel { id: job, reply });
            }
            for reply in live.replies.drain(..) {
                let _ = reply.send(Ok(()));
            }
            if let Some(outcome) = live.finished.take() {
                finished(&self.metrics, live, outcome);
                self.forget(&id);
            }
        }
        Ok(())
    }
}

/// Counts instances that reached a terminal state since the last write.
fn count_tasks(
    metrics: &CoordinatorMetrics,
    before: &BTreeMap<String, u32>,
    after: &BTreeMap<String, u32>,
) {
    for state in WORKFLOW_TASK_STATES {
        let was = before.get(state).copied().unwrap_or(0);
        let now = after.get(state).copied().unwrap_or(0);
        if now > was {
            metrics
                .workflow_tasks
                .get_or_create(&StateLabel {
                    state: state.to_string(),
                })
                .inc_by(u64::from(now - was));
        }
    }
}

/// A run ended (durably): metrics, its end span, a log line.
fn finished(metrics: &CoordinatorMetrics, live: &Live, outcome: RunOutcome) {
    let h = &live.persisted.header;
    let name = status_name(live.state.status);
    let end_ms = h.finished_at_ms.unwrap_or_else(now_ms);
    let seconds = (end_ms - h.submitted_at_ms).max(0) as f64 / 1000.0;
    metrics
        .workflow_runs
        .get_or_create(&OutcomeLabel {
            outcome: name.clone(),
        })
        .inc();
    metrics.workflow_run_duration.observe(seconds);
    let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    let mut span = PhaseSpan::start_under(
        "workflow.end",
        &h.trace_context,
        SpanKind::Internal,
        Some(at(h.submitted_at_ms)),
        vec![
            KeyValue::new("augur.workflow.id", h.id.clone()),
            KeyValue::new("augur.workflow.name", h.name.clone()),
            KeyValue::new("augur.workflow.outcome", name.clone()),
        ],
    );
    if outcome != RunOutcome::Succeeded {
        span.fail(&name, format!("the run ended {name}"));
    }
    span.end_at(at(end_ms).max(SystemTime::UNIX_EPOCH));
    info!(audit = true, run_id = %h.id, workflow = %h.name, outcome = %name, seconds, "workflow run ended");
}

/// The job of instance `k` of task `t`, labelled with its run, task and item,
/// in the run's trace and owned by the run's owner.
fn build_job(live: &Live, t: usize, k: usize, mut spec: JobSpec) -> JobRecord {
    let h = &live.persisted.header;
    let task = &live.workflow.tasks[t];
    let run_task = &live.state.tasks[t];
    spec.labels.insert(LABEL_RUN.into(), h.id.clone());
    spec.labels.insert(LABEL_TASK.into(), task.name.clone());
    if run_task.fanned {
        spec.labels.insert(LABEL_ITEM_INDEX.into(), k.to_string());
        if let Some(item) = run_task.instances.get(k).and_then(|i| i.item.as_ref()) {
            // Longer items reach the job through `${{ item }}` only.
            if item.len() <= augur_core::spec::MAX_LABEL_VALUE
                && !item.chars().any(char::is_control)
            {
                spec.labels.insert(LABEL_ITEM.into(), item.clone());
            }
        }
    }
    let mut job = JobRecord::new(JobId::generate(), spec, now_ms());
    job.owner = h.owner.clone();
    let mut attributes = vec![
        KeyValue::new("augur.job.id", job.id.to_string()),
        KeyValue::new("augur.workflow.id", h.id.clone()),
        KeyValue::new("augur.workflow.task", task.name.clone()),
        KeyValue::new("cicd.pipeline.task.name", job.spec.name.clone()),
    ];
    if run_task.fanned {
        attributes.push(KeyValue::new("augur.workflow.item_index", k as i64));
    }
    let span = PhaseSpan::start_under(
        "job.submit",
        &h.trace_context,
        SpanKind::Internal,
        None,
        attributes,
    );
    job.trace_context = span.carrier();
    span.end();
    job
}
