//! The leader's decision loop: queue, placement, dispatch, results, retries,
//! cancellation, worker loss. Owns all leader state; reacts to [`LeaderInput`]s
//! in batches and dispatches once per batch.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use augur_core::{apply, now_ms, Event, JobId, JobRecord, JobState, WorkerId, WorkerInfo};
use augur_placement::Scheduler;
use augur_proto::v1 as pb;
use augur_proto::v1::coordinator_message::Kind as Out;
use augur_proto::v1::worker_message::Kind as In;
use augur_store::{Fence, JobStore};
use augur_telemetry::context::PhaseSpan;
use augur_telemetry::CoordinatorMetrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, warn};

use super::dispatch::{job_request, worker_spec};
use super::observe;
use super::writer::{AfterCommit, Writer};
use super::{spawn_load, LeaderInput, LeaderSettings, StatusSnapshot, WorkerTx};
use crate::convert::{job_to_pb, report_from_pb, worker_to_pb};

/// How long an assignment may go unreported by its worker's heartbeats before
/// it is presumed never to have arrived.
pub(super) const ASSIGN_REPORT_GRACE: Duration = Duration::from_secs(15);
/// Ids of recently finished jobs remembered, so late watch events are ignored
/// without reading etcd.
const RECENT_DONE: usize = 100_000;
/// Inputs handled before placing again, so a burst is placed in one pass.
const MAX_INPUTS_PER_PASS: usize = 4096;

pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) tx: WorkerTx,
}

#[derive(Default)]
pub(super) struct WorkerEntry {
    pub(super) info: Option<WorkerInfo>,
    pub(super) conn: Option<Conn>,
    pub(super) used: u32,
    /// Jobs with an attempt out on this worker, and when it was sent.
    pub(super) attempts: HashMap<JobId, Instant>,
    /// Set when its lease expired while its stream was still up (etcd trouble
    /// rather than a dead worker): it gets a grace period to re-register.
    pub(super) lease_lost_at: Option<Instant>,
}

impl WorkerEntry {
    pub(super) fn placeable(&self) -> bool {
        self.conn.is_some() && self.info.as_ref().is_some_and(|i| !i.draining)
    }
}

pub(crate) struct Brain {
    pub(super) settings: Arc<LeaderSettings>,
    pub(super) metrics: Arc<CoordinatorMetrics>,
    pub(super) fence: Fence,
    pub(super) writer: Writer,
    pub(super) self_tx: mpsc::UnboundedSender<LeaderInput>,
    pub(super) store: JobStore,
    pub(super) jobs: HashMap<JobId, JobRecord>,
    /// Queue, slots and placement policy (augur-placement): the one engine the
    /// simulator and `augur tune` use too.
    pub(super) scheduler: Scheduler<JobId, WorkerId>,
    /// Waiting for their retry backoff.
    pub(super) delayed: BinaryHeap<Reverse<(i64, JobId)>>,
    pub(super) workers: HashMap<WorkerId, WorkerEntry>,
    pub(super) recent_done: (HashSet<JobId>, VecDeque<JobId>),
    /// Until this instant a new leader waits for workers to report in.
    pub(super) reconcile_until: Option<Instant>,
}

impl Brain {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Arc<LeaderSettings>,
        metrics: Arc<CoordinatorMetrics>,
        fence: Fence,
        writer: Writer,
        self_tx: mpsc::UnboundedSender<LeaderInput>,
        store: JobStore,
        active: Vec<JobRecord>,
        workers: Vec<WorkerInfo>,
        scheduler: Scheduler<JobId, WorkerId>,
    ) -> Self {
        let mut brain = Brain {
            reconcile_until: None,
            settings,
            metrics,
            fence,
            writer,
            self_tx,
            store,
            jobs: HashMap::new(),
            scheduler,
            delayed: BinaryHeap::new(),
            workers: HashMap::new(),
            recent_done: (HashSet::new(), VecDeque::new()),
        };
        observe::initialise(&brain.metrics, brain.scheduler.policy());
        for info in workers {
            let id = info.id.clone();
            brain.scheduler.worker_up(id.clone(), worker_spec(&info));
            // Not placeable until it attaches.
            brain.scheduler.set_worker_available(&id, false);
            brain.workers.entry(id).or_default().info = Some(info);
        }
        let mut any_active = false;
        let now = Instant::now();
        for job in active {
            if job.state.is_active() {
                any_active = true;
                if let Some(w) = &job.worker_id {
                    let entry = brain.workers.entry(w.clone()).or_default();
                    entry.used += job.spec.resources.slots;
                    entry.attempts.insert(job.id, now);
                    let started = job.started_at_ms.unwrap_or_else(now_ms);
                    brain
                        .scheduler
                        .job_running(job.id, job_request(&job), w.clone(), started);
                }
            }
            brain.insert(job);
        }
        if any_active {
            brain.reconcile_until = Some(now + brain.settings.reconcile_grace);
            info!(
                grace_ms = brain.settings.reconcile_grace.as_millis() as u64,
                "waiting for workers to report before dispatching"
            );
        }
        brain
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<LeaderInput>,
        demote: CancellationToken,
    ) {
        let mut audit = tokio::time::interval(Duration::from_secs(5));
        let mut gauges = tokio::time::interval(Duration::from_millis(250));
        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = demote.cancelled() => break,
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input);
                    let mut n = 1;
                    while n < MAX_INPUTS_PER_PASS {
                        match rx.try_recv() {
                            Ok(input) => self.handle(input),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = audit.tick() => self.check_unreported(),
                _ = gauges.tick() => self.update_gauges(),
            }
            self.promote_delayed();
            self.expire_lease_grace();
            self.finish_reconcile_if_done();
            if self.reconcile_until.is_none() {
                self.dispatch();
            }
        }
        // Tell every connected worker to find the next leader.
        for entry in self.workers.values() {
            if let Some(conn) = &entry.conn {
                let _ = conn
                    .tx
                    .send(Err(Status::unavailable("leader stepped down")));
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(1);
        if let Some(Reverse((at, _))) = self.delayed.peek() {
            let ms = (*at - now_ms()).max(0) as u64;
            wake = wake.min(Instant::now() + Duration::from_millis(ms));
        }
        if let Some(until) = self.reconcile_until {
            wake = wake.min(until);
        }
        wake
    }

    fn insert(&mut self, job: JobRecord) {
        if job.state == JobState::Pending {
            self.enqueue(&job);
        }
        self.jobs.insert(job.id, job);
    }

    fn enqueue(&mut self, job: &JobRecord) {
        let now = now_ms();
        if job.not_before_ms > now {
            self.delayed.push(Reverse((job.not_before_ms, job.id)));
        } else {
            self.scheduler.job_arrived(job.id, job_request(job), now);
        }
    }

    fn promote_delayed(&mut self) {
        let now = now_ms();
        while let Some(Reverse((at, id))) = self.delayed.peek().copied() {
            if at > now {
                break;
            }
            self.delayed.pop();
            if let Some(job) = self.jobs.get(&id) {
                if job.state == JobState::Pending {
                    self.scheduler.job_arrived(id, job_request(job), now);
                }
            }
        }
    }

    fn remember_done(&mut self, id: JobId) {
        let (set, order) = &mut self.recent_done;
        if set.insert(id) {
            order.push_back(id);
            if order.len() > RECENT_DONE {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// Stores a new version of a job: memory, queue and the write-behind batch.
    pub(super) fn update(&mut self, next: JobRecord, after: Option<AfterCommit>) {
        self.update_with_run(next, None, after);
    }

    /// As `update`, with the run record of the attempt that just ended.
    fn update_with_run(
        &mut self,
        next: JobRecord,
        run: Option<augur_core::RunRecord>,
        after: Option<AfterCommit>,
    ) {
        let id = next.id;
        let previous = self.jobs.get(&id).map(|j| j.state);
        if previous != Some(next.state) {
            observe::audit_transition(previous, &next, &self.settings.node_id);
        }
        if !next.state.is_active() {
            // Ended, cancelled or back to the queue: the scheduler forgets the
            // old placement (a no-op if it never knew the job).
            self.scheduler.job_removed(&id);
        }
        if next.state.is_terminal() {
            self.jobs.remove(&id);
            self.remember_done(id);
        } else {
            if next.state == JobState::Pending {
                self.enqueue(&next);
            }
            self.jobs.insert(id, next.clone());
        }
        self.writer.push(next, run, after);
    }

    fn handle(&mut self, input: LeaderInput) {
        match input {
            LeaderInput::Submitted(job) => self.admit(*job),
            LeaderInput::Loaded(jobs) => jobs.into_iter().for_each(|j| self.admit(j)),
            LeaderInput::PendingIds(ids) => {
                let unknown: Vec<JobId> = ids
                    .into_iter()
                    .filter(|id| !self.jobs.contains_key(id) && !self.recent_done.0.contains(id))
                    .collect();
                if !unknown.is_empty() {
                    spawn_load(self.store.clone(), unknown, self.self_tx.clone());
                }
            }
            LeaderInput::Workers(events) => events.into_iter().for_each(|e| self.worker_event(e)),
            LeaderInput::Attached {
                worker,
                conn,
                hello,
                tx,
            } => self.attached(worker, conn, hello, tx),
            LeaderInput::Detached { worker, conn } => {
                if let Some(entry) = self.workers.get_mut(&worker) {
                    if entry.conn.as_ref().is_some_and(|c| c.id == conn) {
                        entry.conn = None;
                        self.scheduler.set_worker_available(&worker, false);
                        if entry.info.is_none() {
                            self.worker_gone(&worker, "worker lease expired and its stream closed");
                        } else {
                            info!(worker_id = %worker, "worker stream closed; its jobs stay until its lease expires");
                        }
                    }
                }
            }
            LeaderInput::Message { worker, conn, msg } => self.message(worker, conn, msg),
            LeaderInput::SendFailed {
                worker,
                job,
                attempt,
            } => self.lose(&job, attempt, &worker, "assignment could not be delivered"),
            LeaderInput::Cancel { id, reply } => self.cancel(id, reply),
            LeaderInput::Model(model) => {
                info!(version = model.version, "placing with a new runtime model");
                self.scheduler.set_model(Some(*model));
            }
            LeaderInput::PlacementConfig(config) => self.replace_scheduler(*config),
            LeaderInput::Status { reply } => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    /// Takes in a job read or submitted elsewhere, unless already known.
    fn admit(&mut self, job: JobRecord) {
        if self.jobs.contains_key(&job.id) || self.recent_done.0.contains(&job.id) {
            return;
        }
        if job.state == JobState::Pending {
            debug!(job_id = %job.id, "job queued");
            self.insert(job);
        }
    }

    /// Switches to a new placement configuration: a fresh engine with the same
    /// predictor, told about every worker and job as they are now.
    fn replace_scheduler(&mut self, config: augur_placement::PlacementConfig) {
        let predictor = self.scheduler.predictor().clone();
        let scheduler_config = augur_placement::SchedulerConfig {
            placement: config,
            ..self.scheduler.config().clone()
        };
        let mut scheduler = Scheduler::new(scheduler_config, predictor);
        for (id, entry) in &self.workers {
            if let Some(info) = &entry.info {
                scheduler.worker_up(id.clone(), worker_spec(info));
                scheduler.set_worker_available(id, entry.placeable());
            }
        }
        let now = now_ms();
        for job in self.jobs.values() {
            match (&job.state, &job.worker_id) {
                (JobState::Pending, _) if job.not_before_ms <= now => {
                    scheduler.job_arrived(job.id, job_request(job), now)
                }
                (state, Some(worker)) if state.is_active() => scheduler.job_running(
                    job.id,
                    job_request(job),
                    worker.clone(),
                    job.started_at_ms.unwrap_or(now),
                ),
                _ => {}
            }
        }
        self.scheduler = scheduler;
        observe::initialise(&self.metrics, self.scheduler.policy());
        info!(policy = %self.scheduler.policy(), "placement configuration applied");
    }

    pub(super) fn sync_availability(&mut self, id: &WorkerId) {
        let placeable = self.workers.get(id).is_some_and(|e| e.placeable());
        self.scheduler.set_worker_available(id, placeable);
    }

    pub(super) fn send(&self, worker: &WorkerId, msg: Out) {
        if let Some(conn) = self.workers.get(worker).and_then(|e| e.conn.as_ref()) {
            let _ = conn.tx.send(Ok(pb::CoordinatorMessage { kind: Some(msg) }));
        }
    }

    fn message(&mut self, worker: WorkerId, conn: u64, msg: In) {
        let current = self
            .workers
            .get(&worker)
            .and_then(|e| e.conn.as_ref())
            .is_some_and(|c| c.id == conn);
        if !current {
            return;
        }
        match msg {
            In::Started(started) => {
                let Some(attempt) = started.attempt else {
                    return;
                };
                let Ok(id) = attempt.job_id.parse::<JobId>() else {
                    return;
                };
                let Some(job) = self.jobs.get(&id) else {
                    return;
                };
                if job.worker_id.as_ref() != Some(&worker) {
                    return;
                }
                let event = Event::Start {
                    attempt: attempt.attempt,
                    now_ms: started.started_at_ms,
                };
                if let Ok(next) = apply(job, &event) {
                    observe::started(&self.metrics, &next, started.started_at_ms);
                    self.scheduler.job_started(&id, started.started_at_ms);
                    self.update(next, None);
                }
            }
            In::Finished(finished) => self.finished(worker, finished),
            In::Heartbeat(beat) => {
                if let Some(entry) = self.workers.get_mut(&worker) {
                    let reported: HashSet<String> =
                        beat.running.iter().map(|a| a.job_id.clone()).collect();
                    // Refresh the send time of attempts the worker confirms.
                    for (id, sent) in entry.attempts.iter_mut() {
                        if reported.contains(&id.to_string()) {
                            *sent = Instant::now();
                        }
                    }
                }
            }
            In::Hello(_) => {}
        }
    }

    fn finished(&mut self, worker: WorkerId, finished: pb::Finished) {
        let Some(attempt_ref) = finished.attempt.clone() else {
            return;
        };
        let ack = Out::Ack(pb::Ack {
            attempt: Some(attempt_ref.clone()),
        });
        let id = attempt_ref.job_id.parse::<JobId>().ok();
        let job = id.and_then(|id| self.jobs.get(&id));
        let current = job.is_some_and(|j| {
            j.attempt == attempt_ref.attempt
                && j.worker_id.as_ref() == Some(&worker)
                && j.state.is_active()
        });
        let (Some(job), true) = (job, current) else {
            // Stale or already recorded: acknowledge so the worker drops it.
            self.send(&worker, ack);
            return;
        };
        let Some(report) = report_from_pb(&finished, self.settings.max_output_tail) else {
            warn!(worker_id = %worker, "finished message without a valid outcome");
            return;
        };
        let outcome = crate::convert::attempt_result(&finished);
        let event = Event::Finish {
            report,
            now_ms: now_ms(),
            jitter_sample: rand::random::<f64>(),
        };
        let Event::Finish { report, .. } = &event else {
            return;
        };
        let speed = self
            .workers
            .get(&worker)
            .and_then(|e| e.info.as_ref())
            .map_or(1.0, |i| augur_core::run::speed_of(&i.labels));
        let run = augur_core::RunRecord::from_attempt(job, &worker, speed, report);
        match apply(job, &event) {
            Ok(next) => {
                let span = observe::reported(&self.metrics, job, &next, outcome);
                if let Some(p) = self.scheduler.prediction(&next.id) {
                    observe::prediction_error(
                        &self.metrics,
                        self.scheduler.policy(),
                        p.seconds_on(speed),
                        &run,
                    );
                }
                self.scheduler.job_finished(&next.id, Some(&run));
                self.release(&worker, &next.id, next.spec.resources.slots);
                let after = self.ack_action(&worker, ack, Some(span));
                self.update_with_run(next, Some(run), after);
            }
            Err(e) => {
                warn!(job_id = %attempt_ref.job_id, error = %e, "result not applicable");
                self.send(&worker, ack);
            }
        }
    }

    fn ack_action(
        &self,
        worker: &WorkerId,
        msg: Out,
        span: Option<PhaseSpan>,
    ) -> Option<AfterCommit> {
        let conn = self.workers.get(worker)?.conn.as_ref()?;
        Some(AfterCommit::Send {
            tx: conn.tx.clone(),
            msg: Box::new(pb::CoordinatorMessage { kind: Some(msg) }),
            worker: worker.clone(),
            job: None,
            span,
        })
    }

    fn release(&mut self, worker: &WorkerId, job: &JobId, slots: u32) {
        if let Some(entry) = self.workers.get_mut(worker) {
            if entry.attempts.remove(job).is_some() {
                entry.used = entry.used.saturating_sub(slots);
            }
        }
    }

    /// The attempt is gone with its worker (or never reached it).
    pub(super) fn lose(&mut self, id: &JobId, attempt: u32, worker: &WorkerId, reason: &str) {
        let Some(job) = self.jobs.get(id) else { return };
        if job.attempt != attempt
            || job.worker_id.as_ref() != Some(worker)
            || !job.state.is_active()
        {
            return;
        }
        let event = Event::Lost {
            attempt,
            reason: reason.to_string(),
            now_ms: now_ms(),
        };
        if let Ok(next) = apply(job, &event) {
            warn!(job_id = %id, attempt, worker_id = %worker, reason, "attempt lost");
            self.metrics.attempts_lost.inc();
            if next.state.is_terminal() {
                observe::finished(&self.metrics, &next);
            }
            self.release(worker, id, next.spec.resources.slots);
            // If the worker is still there, make sure it stops the orphan.
            self.send(
                worker,
                Out::Cancel(pb::Cancel {
                    attempt: Some(pb::AttemptRef {
                        job_id: id.to_string(),
                        attempt,
                        epoch: self.fence.epoch(),
                    }),
                }),
            );
            self.update(next, None);
        }
    }

    fn cancel(&mut self, id: JobId, reply: tokio::sync::oneshot::Sender<Result<pb::Job, Status>>) {
        let Some(job) = self.jobs.get(&id) else {
            // Not active here: it is terminal (or unknown); answer from etcd.
            let store = self.store.clone();
            tokio::spawn(async move {
                let answer = match store.get(&id).await {
                    // Cancelling twice is not an error; cancelling a job that
                    // ended otherwise is.
                    Ok(Some(job)) if job.state == JobState::Cancelled => Ok(job_to_pb(&job)),
                    Ok(Some(job)) if job.state.is_terminal() => Err(Status::failed_precondition(
                        format!("job {id} already ended as {}", job.state),
                    )),
                    Ok(Some(job)) => Ok(job_to_pb(&job)),
                    Ok(None) => Err(Status::not_found(format!("no job {id}"))),
                    Err(e) => Err(crate::convert::store_status(e)),
                };
                let _ = reply.send(answer);
            });
            return;
        };
        match apply(job, &Event::Cancel { now_ms: now_ms() }) {
            Ok(next) => {
                if next.state.is_active() {
                    if let Some(worker) = next.worker_id.clone() {
                        self.send(
                            &worker,
                            Out::Cancel(pb::Cancel {
                                attempt: Some(pb::AttemptRef {
                                    job_id: id.to_string(),
                                    attempt: next.attempt,
                                    epoch: self.fence.epoch(),
                                }),
                            }),
                        );
                    }
                }
                if next.state.is_terminal() {
                    observe::finished(&self.metrics, &next);
                }
                let after = AfterCommit::Reply(reply, Box::new(next.clone()));
                self.update(next, Some(after));
            }
            Err(e) => {
                let _ = reply.send(Err(Status::failed_precondition(e.to_string())));
            }
        }
    }

    fn update_gauges(&self) {
        let mut g = observe::Gauges {
            queued: [0; 3],
            running: 0,
            workers_ready: 0,
            workers_disconnected: 0,
            workers_draining: 0,
        };
        for job in self.jobs.values() {
            if job.state == JobState::Pending {
                g.queued[observe::class_index(job.spec.priority)] += 1;
            } else {
                g.running += 1;
            }
        }
        for entry in self.workers.values() {
            match (&entry.info, &entry.conn) {
                (Some(info), _) if info.draining => g.workers_draining += 1,
                (Some(_), Some(_)) => g.workers_ready += 1,
                (Some(_), None) => g.workers_disconnected += 1,
                (None, _) => {}
            }
        }
        observe::gauges(&self.metrics, &g);
    }

    fn snapshot(&self) -> StatusSnapshot {
        let mut workers: Vec<pb::Worker> = self
            .workers
            .values()
            .filter_map(|e| {
                let info = e.info.as_ref()?;
                let state = if info.draining {
                    pb::WorkerState::Draining
                } else if e.conn.is_some() {
                    pb::WorkerState::Ready
                } else {
                    pb::WorkerState::Disconnected
                };
                Some(worker_to_pb(info, e.attempts.len() as u32, state))
            })
            .collect();
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        let running = self.jobs.values().filter(|j| j.state.is_active()).count() as u64;
        StatusSnapshot {
            workers,
            pending: self.jobs.len() as u64 - running,
            running,
        }
    }
}
