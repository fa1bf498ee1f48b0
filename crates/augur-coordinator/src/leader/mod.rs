//! Everything that runs only while this coordinator leads.
//!
//! The decisions are made by a pure core ([`state::LeaderState`]: jobs,
//! workers, placement, retries, takeover; no I/O, no protobuf, no etcd type),
//! driven by one task, the [`shell`], which decodes what arrives (at the
//! [`edge`] for worker streams) and carries out the core's effects: writes go
//! to the [`writer`], which commits them in fenced batches and only then sends
//! what must follow durability. Everything a term of leadership spawns is a
//! task of its [`term::Term`]; when leadership ends (fence failure, lease lost,
//! shutdown) the term is ended and its tasks are cancelled and awaited.

mod edge;
mod learning;
mod leases;
mod observe;
mod schedules;
mod shell;
mod state;
pub(crate) mod term;
pub(crate) mod workflows;
pub(crate) mod writer;

pub(crate) use edge::announced;

use std::sync::Arc;
use std::time::Duration;

use augur_core::{JobId, JobRecord, WorkerId};
use augur_placement::{PlacementConfig, Scheduler};
use augur_proto::v1 as pb;
use augur_store::{Fence, JobStore, WorkerEvent, WorkerRegistry};
use augur_telemetry::CoordinatorMetrics;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

/// How a cancel is answered.
pub(crate) type CancelReply = oneshot::Sender<Result<pb::Job, Status>>;

/// How long an ending term waits for its tasks before aborting them.
const TERM_END_DEADLINE: Duration = Duration::from_secs(5);

/// Messages to a worker's stream.
pub(crate) type WorkerTx = mpsc::UnboundedSender<Result<pb::CoordinatorMessage, Status>>;

/// What reaches the leader's shell (decoded into core inputs there).
pub(crate) enum LeaderInput {
    /// A job this coordinator just made durable.
    Submitted(Box<JobRecord>),
    /// Jobs read back from etcd after a pending-index event.
    Loaded(Vec<JobRecord>),
    /// Pending-index puts seen by the watch.
    PendingIds(Vec<JobId>),
    Workers(Vec<WorkerEvent>),
    Attached {
        worker: WorkerId,
        conn: u64,
        hello: pb::Hello,
        /// The registration it asks for, decoded and checked at the edge.
        announced: Box<augur_core::WorkerInfo>,
        tx: WorkerTx,
    },
    /// A worker's registration could not be written.
    RegistrationFailed(WorkerId),
    /// A worker's registration was written under this lease.
    LeaseActive(i64),
    /// A worker lease's keeper ended (expired, or no longer renewed).
    LeaseEnded(i64),
    Message {
        worker: WorkerId,
        conn: u64,
        msg: pb::worker_message::Kind,
    },
    Detached {
        worker: WorkerId,
        conn: u64,
    },
    /// An assignment could not be handed to the worker's stream.
    SendFailed {
        worker: WorkerId,
        job: JobId,
        attempt: u32,
    },
    Cancel {
        id: JobId,
        reply: oneshot::Sender<Result<pb::Job, Status>>,
    },
    Status {
        reply: oneshot::Sender<StatusSnapshot>,
    },
    /// Why a pending job waits (`None`: not pending here).
    Explain {
        id: JobId,
        reply: oneshot::Sender<Option<String>>,
    },
    /// A newly trained runtime model.
    Model(Box<augur_predict::Model>),
    /// A new placement configuration (`augur tune --apply`, `augur placement set`).
    PlacementConfig(Box<PlacementConfig>),
}

/// The leader's view for `ClusterStatus` / `ListWorkers`.
#[derive(Clone, Debug, Default)]
pub struct StatusSnapshot {
    pub workers: Vec<pb::Worker>,
    pub pending: u64,
    pub running: u64,
    /// Queued jobs by priority class name.
    pub queued_by_class: Vec<(String, u64)>,
}

/// Settings the leader needs.
#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub node_id: String,
    pub max_output_tail: usize,
    /// How long a new leader waits for workers to reconnect before requeuing.
    pub reconcile_grace: Duration,
    /// TTL of the leases the leader holds for workers' registrations: a
    /// worker whose heartbeats stop is gone this long after the last one.
    pub worker_lease_ttl: Duration,
    pub retention_age: Duration,
    pub retention_count: usize,
    pub retention_interval: Duration,
    /// Run records are kept this long, and at most this many.
    pub run_retention: Duration,
    pub run_retention_count: usize,
    /// How often the leader retrains on new runs, and the fewest it trains on.
    pub retrain_interval: Duration,
    pub min_training_runs: usize,
}

/// How API handlers reach the leader's shell while this node leads.
#[derive(Clone)]
pub struct LeaderHandle {
    pub(crate) tx: mpsc::UnboundedSender<LeaderInput>,
    /// The task driving workflow runs.
    pub(crate) workflows: mpsc::UnboundedSender<workflows::WorkflowInput>,
    pub epoch: i64,
}

impl LeaderHandle {
    pub(crate) fn send(&self, input: LeaderInput) -> Result<(), Status> {
        self.tx
            .send(input)
            .map_err(|_| Status::unavailable("leadership is ending; retry"))
    }

    pub(crate) fn send_workflow(&self, input: workflows::WorkflowInput) -> Result<(), Status> {
        self.workflows
            .send(input)
            .map_err(|_| Status::unavailable("leadership is ending; retry"))
    }
}

/// The stores a leader works with.
#[derive(Clone)]
pub(crate) struct Stores {
    pub jobs: JobStore,
    pub registry: WorkerRegistry,
    pub schedules: augur_store::ScheduleStore,
    pub runs: augur_store::RunHistory,
    pub models: augur_store::ModelStore,
    pub placement: augur_store::PlacementConfigStore,
    pub workflows: augur_store::WorkflowStore,
}

/// Runs the leader until `demote` fires. Calls `on_ready` with the handle once
/// state is loaded.
pub(crate) async fn run(
    settings: Arc<LeaderSettings>,
    metrics: Arc<CoordinatorMetrics>,
    fence: Fence,
    stores: Stores,
    demote: CancellationToken,
    on_ready: impl FnOnce(LeaderHandle),
) -> Result<(), augur_store::StoreError> {
    let Stores {
        jobs,
        registry,
        schedules: schedule_store,
        runs,
        models,
        placement,
        workflows: workflow_store,
    } = stores;
    let loading = std::time::Instant::now();
    let (active, jobs_rev) = jobs.load_active().await?;
    metrics.etcd("load_active", loading.elapsed().as_secs_f64());
    let (workers, workers_rev) = registry.list().await?;
    info!(
        epoch = fence.epoch(),
        active_jobs = active.len(),
        workers = workers.len(),
        "leading: state loaded"
    );
    let warm = learning::warm_start(&settings, &runs, &models, &placement).await?;
    let model_version = warm.model.as_ref().map_or(0, |m| m.version);
    metrics.model_version.set(model_version as i64);
    let scheduler = placement_engine(warm.config, warm.model, &warm.runs);
    let mut pending_watch = jobs.watch_pending(jobs_rev).await?;
    let mut worker_watch = registry.watch(workers_rev).await?;

    let mut term = term::Term::new(fence.clone(), demote.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    let (workflow_tx, workflow_rx) = mpsc::unbounded_channel();
    let writer = writer::spawn(
        &mut term,
        jobs.clone(),
        tx.clone(),
        metrics.clone(),
        Some(workflow_tx.clone()),
    );
    term.spawn(
        "workflows",
        workflows::run(
            workflows::Driver::new(
                workflow_store.clone(),
                jobs.clone(),
                fence.clone(),
                tx.clone(),
                metrics.clone(),
            ),
            workflow_rx,
            demote.clone(),
        ),
    );

    let watch_tx = tx.clone();
    let watch_demote = demote.clone();
    term.spawn("watches", async move {
        loop {
            let outcome = tokio::select! {
                _ = watch_demote.cancelled() => return,
                ids = pending_watch.next() => ids.map(LeaderInput::PendingIds),
                events = worker_watch.next() => events.map(LeaderInput::Workers),
            };
            match outcome {
                Ok(input) => {
                    if watch_tx.send(input).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // A watch that ends (compaction, etcd restart) cannot be
                    // resumed without risking a missed event: step down and let
                    // the next term reload everything.
                    warn!(error = %e, "leader watch ended; stepping down to reload");
                    watch_demote.cancel();
                    return;
                }
            }
        }
    });
    term.spawn(
        "retention",
        janitor(
            (jobs.clone(), runs.clone(), workflow_store.clone()),
            fence.clone(),
            settings.clone(),
            demote.clone(),
        ),
    );
    term.spawn(
        "schedules",
        schedules::run(
            schedule_store,
            (jobs.clone(), workflow_store.clone()),
            fence.clone(),
            tx.clone(),
            demote.clone(),
        ),
    );
    term.spawn(
        "trainer",
        learning::trainer(
            settings.clone(),
            runs,
            models,
            fence.clone(),
            tx.clone(),
            metrics.clone(),
            model_version,
            demote.clone(),
        ),
    );
    term.spawn(
        "placement_config",
        learning::follow_config(placement, warm.config_revision, tx.clone(), demote.clone()),
    );

    on_ready(LeaderHandle {
        tx: tx.clone(),
        workflows: workflow_tx,
        epoch: fence.epoch(),
    });
    let origin = std::time::Instant::now();
    let now = state::Now {
        wall_ms: augur_core::now_ms(),
        mono_ms: 0,
    };
    let timing = state::Timing {
        reconcile_grace_ms: settings.reconcile_grace.as_millis() as i64,
        ..state::Timing::default()
    };
    // Registrations of the previous term are adopted: their leases are kept
    // alive through the reconnect grace while their workers find this leader.
    let mut leases = leases::WorkerLeases::new(registry, settings.worker_lease_ttl, tx.clone());
    let hold_until = tokio::time::Instant::now() + settings.reconcile_grace;
    for info in &workers {
        leases.hold(info.lease_id, hold_until, &mut term);
    }
    let state = state::LeaderState::new(timing, fence.epoch(), scheduler, active, workers, now);
    if state.reconciling() {
        info!(
            grace_ms = settings.reconcile_grace.as_millis() as u64,
            "waiting for workers to report before dispatching"
        );
    }
    observe::initialise(&metrics, state.policy());
    let shell = shell::Shell {
        settings,
        metrics,
        core: state,
        writer,
        store: jobs,
        leases,
        self_tx: tx,
        conns: Default::default(),
        origin,
    };
    shell.run(rx, &mut term).await;
    term.end(TERM_END_DEADLINE).await;
    Ok(())
}

/// Revisions of history the leader leaves when it compacts etcd.
const COMPACTION_KEEP_REVISIONS: i64 = 200_000;

/// Removes finished jobs past their retention, periodically.
async fn janitor(
    (jobs, runs, workflows): (
        JobStore,
        augur_store::RunHistory,
        augur_store::WorkflowStore,
    ),
    fence: Fence,
    settings: Arc<LeaderSettings>,
    demote: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = demote.cancelled() => return,
            _ = tokio::time::sleep(settings.retention_interval) => {}
        }
        let cutoff = augur_core::now_ms() - settings.retention_age.as_millis() as i64;
        match jobs
            .purge_finished(&fence, cutoff, settings.retention_count)
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "finished jobs past retention removed"),
            Err(augur_store::StoreError::Fenced { .. }) => {
                demote.cancel();
                return;
            }
            Err(e) => warn!(error = %e, "retention pass failed"),
        }
        // Ended workflow runs follow the jobs' retention rules.
        match workflows
            .purge_finished(&fence, cutoff, settings.retention_count)
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "ended workflow runs past retention removed"),
            Err(augur_store::StoreError::Fenced { .. }) => {
                demote.cancel();
                return;
            }
            Err(e) => warn!(error = %e, "workflow retention pass failed"),
        }
        // etcd keeps every revision until compacted; keep a generous window
        // (watches further behind than this would have to reload).
        match jobs.compact_history(COMPACTION_KEEP_REVISIONS).await {
            Ok(Some(rev)) => info!(revision = rev, "etcd history compacted"),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "etcd compaction failed"),
        }
        let run_cutoff = augur_core::now_ms() - settings.run_retention.as_millis() as i64;
        match runs
            .purge(&fence, run_cutoff, settings.run_retention_count)
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "run records past retention removed"),
            Err(augur_store::StoreError::Fenced { .. }) => {
                demote.cancel();
                return;
            }
            Err(e) => warn!(error = %e, "run retention pass failed"),
        }
    }
}

/// The placement engine for this term: the configured policy, a predictor warm
/// with the stored model and the recorded runs.
pub(crate) fn placement_engine(
    config: PlacementConfig,
    model: Option<augur_predict::Model>,
    runs: &[augur_core::RunRecord],
) -> Scheduler<JobId, WorkerId> {
    let predictor = augur_predict::RuntimePredictor::with_model(
        model,
        augur_predict::History::from_records(runs),
        config.predictor.clone(),
    );
    let scheduler_config = augur_placement::SchedulerConfig {
        placement: config,
        ..augur_placement::SchedulerConfig::default()
    };
    Scheduler::new(scheduler_config, predictor)
}
