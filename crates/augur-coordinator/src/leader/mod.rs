//! Everything that runs only while this coordinator leads.
//!
//! One task, the [`brain`], owns the in-memory view of non-terminal jobs and of
//! workers and makes every decision; it never waits on etcd. Its writes go to the
//! [`writer`], which commits them in fenced batches. Watches of the pending index
//! and the worker registry, worker streams and API calls all reach the brain as
//! [`LeaderInput`] messages. When leadership ends (fence failure, lease lost,
//! shutdown) the `demote` token fires and every one of these tasks stops.

mod brain;
mod dispatch;
mod learning;
mod observe;
mod schedules;
mod workers;
pub(crate) mod writer;

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
use tracing::{info, warn, Instrument};

/// Messages to a worker's stream.
pub(crate) type WorkerTx = mpsc::UnboundedSender<Result<pb::CoordinatorMessage, Status>>;

/// What the brain reacts to.
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
        tx: WorkerTx,
    },
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
}

/// Settings the leader needs.
#[derive(Clone, Debug)]
pub struct LeaderSettings {
    pub node_id: String,
    pub max_output_tail: usize,
    /// How long a new leader waits for workers to reconnect before requeuing.
    pub reconcile_grace: Duration,
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

/// How API handlers reach the brain while this node leads.
#[derive(Clone)]
pub struct LeaderHandle {
    pub(crate) tx: mpsc::UnboundedSender<LeaderInput>,
    pub epoch: i64,
}

impl LeaderHandle {
    pub(crate) fn send(&self, input: LeaderInput) -> Result<(), Status> {
        self.tx
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
    let (tx, rx) = mpsc::unbounded_channel();
    let (writer, writer_task) = writer::spawn(
        (jobs.clone(), runs.clone()),
        fence.clone(),
        demote.clone(),
        tx.clone(),
        metrics.clone(),
    );

    let mut pending_watch = jobs.watch_pending(jobs_rev).await?;
    let mut worker_watch = registry.watch(workers_rev).await?;

    let watch_tx = tx.clone();
    let watch_demote = demote.clone();
    let watches = tokio::spawn(
        async move {
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
        }
        .instrument(tracing::info_span!("leader_watches")),
    );

    let janitor = tokio::spawn(
        janitor(
            (jobs.clone(), runs.clone()),
            fence.clone(),
            settings.clone(),
            demote.clone(),
        )
        .instrument(tracing::info_span!("retention")),
    );

    let schedule_task = tokio::spawn(
        schedules::run(
            schedule_store,
            jobs.clone(),
            fence.clone(),
            tx.clone(),
            demote.clone(),
        )
        .instrument(tracing::info_span!("schedules")),
    );

    let trainer = tokio::spawn(
        learning::trainer(
            settings.clone(),
            runs,
            models,
            fence.clone(),
            tx.clone(),
            metrics.clone(),
            model_version,
            demote.clone(),
        )
        .instrument(tracing::info_span!("trainer")),
    );
    let config_follower = tokio::spawn(
        learning::follow_config(placement, warm.config_revision, tx.clone(), demote.clone())
            .instrument(tracing::info_span!("placement_config")),
    );

    on_ready(LeaderHandle {
        tx: tx.clone(),
        epoch: fence.epoch(),
    });
    let brain = brain::Brain::new(
        settings,
        metrics,
        fence,
        writer,
        tx,
        jobs.clone(),
        active,
        workers,
        scheduler,
    );
    brain.run(rx, demote.clone()).await;
    demote.cancel();
    for task in [
        watches,
        janitor,
        writer_task,
        schedule_task,
        trainer,
        config_follower,
    ] {
        if let Err(e) = task.await {
            warn!(error = %e, "leader task ended abnormally");
        }
    }
    Ok(())
}

/// Reads jobs named by pending-index events and hands them to the brain (which
/// ignores those it already knows).
pub(crate) fn spawn_load(jobs: JobStore, ids: Vec<JobId>, tx: mpsc::UnboundedSender<LeaderInput>) {
    tokio::spawn(async move {
        let mut loaded = Vec::with_capacity(ids.len());
        for id in ids {
            match jobs.get(&id).await {
                Ok(Some(job)) => loaded.push(job),
                Ok(None) => {}
                Err(e) => warn!(job_id = %id, error = %e, "could not read submitted job"),
            }
        }
        let _ = tx.send(LeaderInput::Loaded(loaded));
    });
}

/// Revisions of history the leader leaves when it compacts etcd.
const COMPACTION_KEEP_REVISIONS: i64 = 200_000;

/// Removes finished jobs past their retention, periodically.
async fn janitor(
    (jobs, runs): (JobStore, augur_store::RunHistory),
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
