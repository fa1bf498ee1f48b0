//! The leader's decisions as a pure state machine.
//!
//! [`LeaderState::handle`] takes one domain [`Input`] and the time, changes the
//! in-memory view (jobs, workers, the scheduler's queue and slot ledger) and
//! returns the [`Effect`]s the shell must carry out: records to write (fenced,
//! batched) with what may only happen once they are durable, messages to send
//! on worker connections, jobs to read, answers to callers, observations for
//! metrics and traces. Nothing here does I/O, reads a clock, or knows protobuf,
//! `tonic::Status` or etcd: the shell (`leader::shell`) decodes at the edges and
//! executes the effects, and the property and simulation tests (`tests`) drive
//! this core directly.
//!
//! Invariants the tests check over random event sequences:
//! * an `Assign` is only ever sent after the record of that assignment is
//!   durable (it is never a bare [`Effect::Send`], always the `then` of an
//!   [`Effect::Write`]);
//! * no attempt number is assigned twice and nothing leaves a terminal state
//!   (`augur_core::transition` decides every state change);
//! * a worker's slots in use never go negative nor over its capacity (the
//!   scheduler's ledger is the only one);
//! * every accepted job ends when workers stay up.

mod dispatch;
mod jobs;
mod workers;

#[cfg(test)]
mod registration_tests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use augur_core::{AttemptReport, JobId, JobRecord, JobState, RunRecord, WorkerId, WorkerInfo};
use augur_placement::{Decision, Policy, Scheduler};

pub(crate) use workers::{WorkerState, WorkerView};

/// A worker connection, numbered by the shell; a reconnect is a new one.
pub(crate) type ConnId = u64;

/// An attempt as workers name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AttemptKey {
    pub job: JobId,
    pub attempt: u32,
}

/// The time, as the shell read it: wall-clock milliseconds for records, and a
/// monotonic millisecond count for grace periods (a wall-clock jump must not
/// shorten or stretch them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Now {
    pub wall_ms: i64,
    pub mono_ms: i64,
}

/// How long the core waits for things, in milliseconds.
#[derive(Clone, Debug)]
pub(crate) struct Timing {
    /// How long a new leader waits for workers to reconnect before requeuing,
    /// and how long a worker whose lease lapsed with its stream up has to
    /// re-register.
    pub reconcile_grace_ms: i64,
    /// How long an assignment may go unconfirmed by heartbeats.
    pub assign_report_grace_ms: i64,
    /// How often unconfirmed assignments are looked for.
    pub audit_interval_ms: i64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            reconcile_grace_ms: 7_000,
            assign_report_grace_ms: 15_000,
            audit_interval_ms: 5_000,
        }
    }
}

/// What a worker said on its stream, decoded.
#[derive(Clone, Debug)]
pub(crate) enum FromWorker {
    Started {
        attempt: AttemptKey,
        at_ms: i64,
    },
    /// A result. `report` is `Err` when the worker sent one the leader cannot
    /// read (no or an unknown outcome): it is refused, acknowledged so the
    /// worker stops re-sending it, and the attempt counts as lost.
    Finished {
        attempt: AttemptKey,
        report: Result<Box<AttemptReport>, String>,
        outcome: &'static str,
    },
    /// The attempts it runs or holds results of.
    Heartbeat {
        running: Vec<AttemptKey>,
    },
    /// It takes no new work (SIGTERM).
    Draining,
    /// It is leaving after its drain: end its registration now.
    Goodbye,
}

/// What the core reacts to. `R` is the shell's handle to answer a caller.
pub(crate) enum Input<R> {
    /// A job this coordinator just made durable.
    Submitted(Box<JobRecord>),
    /// Jobs read back after pending-index events.
    Loaded(Vec<JobRecord>),
    /// Pending-index puts seen by the watch.
    PendingIds(Vec<JobId>),
    /// A registration appeared or changed.
    WorkerRegistered(Box<WorkerInfo>),
    /// A registration went away (its lease expired or was revoked).
    WorkerDeregistered(WorkerId),
    /// A worker opened a stream. `lease_id` is the registration it says it
    /// holds (0: it did not say); `announced` is the registration it asks for
    /// (slots, labels, capacity; its lease id is not set).
    Attached {
        worker: WorkerId,
        conn: ConnId,
        running: Vec<AttemptKey>,
        lease_id: i64,
        announced: Box<WorkerInfo>,
    },
    /// Writing a worker's registration failed (it is retried while the
    /// worker stays attached).
    RegistrationFailed {
        worker: WorkerId,
    },
    Detached {
        worker: WorkerId,
        conn: ConnId,
    },
    Message {
        worker: WorkerId,
        conn: ConnId,
        msg: FromWorker,
    },
    /// An assignment written as durable could not be handed to the worker.
    DeliveryFailed {
        worker: WorkerId,
        attempt: AttemptKey,
    },
    Cancel {
        id: JobId,
        reply: R,
    },
    /// A newly trained runtime model.
    Model(Box<augur_predict::Model>),
    /// A new placement configuration.
    PlacementConfig(Box<augur_placement::PlacementConfig>),
    /// Time passed: promote retries whose backoff ended, expire graces, finish
    /// takeover, look for unconfirmed assignments, and place what fits.
    Tick,
}

/// Messages to a worker.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ToWorker {
    /// `lease_id`: the registration it is attached under (0: being written).
    Welcome {
        lease_id: i64,
    },
    /// Its registration was written (again) under this lease.
    Registered(i64),
    Assign {
        record: Box<JobRecord>,
    },
    Ack(AttemptKey),
    Cancel(AttemptKey),
    Drain,
}

/// What a trace records when a durable write's follow-up runs.
#[derive(Clone, Debug)]
pub(crate) enum TraceHook {
    /// `job.place` and `job.dispatch` of this decision.
    Dispatch(Box<Decision<JobId, WorkerId>>),
    /// `job.report`: the record before the result, and the attempt's outcome.
    Report {
        before: Box<JobRecord>,
        outcome: &'static str,
    },
}

/// Done only once the record it rides with is durable.
#[derive(Debug)]
pub(crate) enum AfterCommit<R> {
    Send {
        worker: WorkerId,
        conn: ConnId,
        msg: ToWorker,
        trace: Option<TraceHook>,
    },
    /// Answer a cancel with the record as written.
    Reply(R),
}

/// Why a cancel was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CancelRefusal {
    /// The transition does not apply (e.g. the job ended meanwhile).
    NotApplicable(String),
}

/// Things worth a metric, a log line or a span that are not writes.
#[derive(Clone, Debug)]
pub(crate) enum Observation {
    /// A job's state changed (`previous` is `None` for a job new to this leader).
    Transition {
        previous: Option<JobState>,
        record: Box<JobRecord>,
    },
    Started {
        record: Box<JobRecord>,
        at_ms: i64,
    },
    /// A job reached a terminal state other than through a worker's result.
    Finished(Box<JobRecord>),
    AttemptLost {
        attempt: AttemptKey,
        worker: WorkerId,
        reason: String,
    },
    /// Predicted (on the worker that ran it) against measured runtime.
    PredictionError {
        policy: Policy,
        predicted_s: f64,
        run: Box<RunRecord>,
    },
    /// A result the leader could not read was refused (and acknowledged).
    ResultRefused {
        worker: WorkerId,
        attempt: AttemptKey,
        reason: String,
    },
    /// A stream was refused: the id is attached elsewhere or the registration
    /// it names is not the worker's.
    AttachRefused {
        worker: WorkerId,
        reason: String,
    },
    /// Placement configuration or model changed.
    PolicyChanged(Policy),
    ModelLoaded(u64),
    WorkerDraining {
        worker: WorkerId,
        running: usize,
    },
    WorkerGone {
        worker: WorkerId,
        jobs: usize,
        reason: String,
    },
    /// Takeover finished; `orphans` attempts of workers that never came back.
    Reconciled {
        orphans: usize,
    },
    /// A job no current worker could ever run (became so, or stopped being so).
    Unschedulable {
        job: JobId,
        reason: Option<String>,
    },
}

/// What the shell must do.
#[derive(Debug)]
pub(crate) enum Effect<R> {
    /// Persist the record (and the run record of the attempt that just ended)
    /// in a fenced batch; then run `then`.
    Write {
        record: Box<JobRecord>,
        run: Option<Box<RunRecord>>,
        then: Option<AfterCommit<R>>,
    },
    /// Send on a live connection now (nothing waits on durability).
    Send {
        conn: ConnId,
        msg: ToWorker,
    },
    /// Close a connection the core refuses, telling the worker why.
    Refuse {
        conn: ConnId,
        reason: String,
    },
    /// Read these jobs and feed them back as [`Input::Loaded`].
    Load(Vec<JobId>),
    /// The job is not active here: answer from the store (it ended, or does
    /// not exist).
    CancelFromStore {
        id: JobId,
        reply: R,
    },
    CancelRefused {
        reply: R,
        refusal: CancelRefusal,
    },
    /// Register an attached worker: grant a lease of the worker-lease TTL
    /// (unless `info.lease_id` names the one it holds already) and write the
    /// registration under it, fenced. Success shows as a registry event;
    /// failure comes back as [`Input::RegistrationFailed`].
    Register(Box<WorkerInfo>),
    /// Renew a worker's lease for another TTL (its stream heartbeats).
    RenewLease(i64),
    /// End a worker's lease now (it said goodbye).
    ReleaseLease(i64),
    /// Mark a worker's registration draining (it said so).
    MarkDraining(WorkerId),
    Observe(Observation),
}

/// Ids of recently finished jobs remembered, so late watch events are ignored
/// without reading the store.
const RECENT_DONE: usize = 100_000;

/// The leader's in-memory view and every decision over it.
pub(crate) struct LeaderState<R> {
    pub(super) timing: Timing,
    /// This term's fence, stamped on assignments.
    pub(super) epoch: i64,
    pub(super) jobs: HashMap<JobId, JobRecord>,
    /// Queue, slots and placement policy: the one engine the simulator uses too.
    pub(super) scheduler: Scheduler<JobId, WorkerId>,
    /// Waiting for their retry backoff: (not before, job).
    pub(super) delayed: BinaryHeap<std::cmp::Reverse<(i64, JobId)>>,
    pub(super) workers: BTreeMap<WorkerId, workers::WorkerEntry>,
    pub(super) recent_done: (HashSet<JobId>, VecDeque<JobId>),
    /// Until this monotonic instant a new leader waits for workers to report.
    pub(super) reconcile_until: Option<i64>,
    pub(super) next_audit_ms: i64,
    /// Pending jobs no current worker could run, and why.
    pub(super) unschedulable: HashMap<JobId, String>,
    /// Workers changed: look at every pending job again at the next tick.
    pub(super) recheck_unschedulable: bool,
    pub(super) effects: Vec<Effect<R>>,
}

impl<R> LeaderState<R> {
    /// A new term's state: the registered workers (not placeable until they
    /// attach) and every non-terminal job. With active jobs on record the core
    /// first waits `reconcile_grace_ms` for their workers to report.
    pub fn new(
        timing: Timing,
        epoch: i64,
        scheduler: Scheduler<JobId, WorkerId>,
        active: Vec<JobRecord>,
        registered: Vec<WorkerInfo>,
        now: Now,
    ) -> Self {
        let mut state = LeaderState {
            next_audit_ms: now.mono_ms + timing.audit_interval_ms,
            timing,
            epoch,
            jobs: HashMap::new(),
            scheduler,
            delayed: BinaryHeap::new(),
            workers: BTreeMap::new(),
            recent_done: (HashSet::new(), VecDeque::new()),
            reconcile_until: None,
            unschedulable: HashMap::new(),
            recheck_unschedulable: true,
            effects: Vec::new(),
        };
        for info in registered {
            state.register(info);
        }
        let mut any_active = false;
        for job in active {
            if job.state.is_active() {
                any_active = true;
                if let Some(worker) = job.worker_id.clone() {
                    state
                        .workers
                        .entry(worker.clone())
                        .or_default()
                        .attempts
                        .insert(job.id, now.mono_ms);
                    let started = job.started_at_ms.unwrap_or(now.wall_ms);
                    state.scheduler.job_running(
                        job.id,
                        dispatch::job_request(&job),
                        worker,
                        started,
                    );
                }
            }
            state.insert(job, now);
        }
        if any_active {
            state.reconcile_until = Some(now.mono_ms + state.timing.reconcile_grace_ms);
        }
        state.effects.clear();
        state
    }

    /// Applies one input and returns what the shell must do, in order.
    pub fn handle(&mut self, input: Input<R>, now: Now) -> Vec<Effect<R>> {
        match input {
            Input::Submitted(job) => self.admit(*job, now),
            Input::Loaded(jobs) => jobs.into_iter().for_each(|j| self.admit(j, now)),
            Input::PendingIds(ids) => {
                let unknown: Vec<JobId> = ids
                    .into_iter()
                    .filter(|id| !self.jobs.contains_key(id) && !self.recent_done.0.contains(id))
                    .collect();
                if !unknown.is_empty() {
                    self.effects.push(Effect::Load(unknown));
                }
            }
            Input::WorkerRegistered(info) => self.registered(*info, now),
            Input::WorkerDeregistered(id) => self.deregistered(&id, now),
            Input::Attached {
                worker,
                conn,
                running,
                lease_id,
                announced,
            } => self.attached(worker, conn, running, lease_id, *announced, now),
            Input::RegistrationFailed { worker } => self.registration_failed(&worker, now),
            Input::Detached { worker, conn } => self.detached(&worker, conn, now),
            Input::Message { worker, conn, msg } => self.message(worker, conn, msg, now),
            Input::DeliveryFailed { worker, attempt } => {
                self.lose(attempt, &worker, "assignment could not be delivered", now)
            }
            Input::Cancel { id, reply } => self.cancel(id, reply, now),
            Input::Model(model) => {
                let version = model.version;
                self.scheduler.set_model(Some(*model));
                self.observe(Observation::ModelLoaded(version));
            }
            Input::PlacementConfig(config) => self.replace_scheduler(*config, now),
            Input::Tick => self.tick(now),
        }
        std::mem::take(&mut self.effects)
    }

    /// When the core next needs a [`Input::Tick`] without any other input
    /// (monotonic ms): a retry's backoff ending, a grace running out, the
    /// next audit.
    pub fn next_wake(&self, now: Now) -> i64 {
        let mut wake = self.next_audit_ms.min(now.mono_ms + 1_000);
        if let Some(std::cmp::Reverse((at, _))) = self.delayed.peek() {
            wake = wake.min(now.mono_ms + (*at - now.wall_ms).max(0));
        }
        if let Some(until) = self.reconcile_until {
            wake = wake.min(until);
        }
        for entry in self.workers.values() {
            if let Some(lost) = entry.lease_lost_at {
                wake = wake.min(lost + self.timing.reconcile_grace_ms);
            }
        }
        wake.max(now.mono_ms)
    }

    /// Whether a new leader is still waiting for workers to report.
    pub fn reconciling(&self) -> bool {
        self.reconcile_until.is_some()
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn policy(&self) -> Policy {
        self.scheduler.policy()
    }

    fn tick(&mut self, now: Now) {
        self.promote_delayed(now);
        self.retry_registrations(now);
        self.expire_lease_grace(now);
        self.finish_reconcile_if_done(now);
        if now.mono_ms >= self.next_audit_ms {
            self.next_audit_ms = now.mono_ms + self.timing.audit_interval_ms;
            self.check_unreported(now);
        }
        if self.recheck_unschedulable {
            self.check_unschedulable();
        }
        if self.reconcile_until.is_none() {
            self.dispatch(now);
        }
    }

    fn observe(&mut self, observation: Observation) {
        self.effects.push(Effect::Observe(observation));
    }

    fn send(&mut self, worker: &WorkerId, msg: ToWorker) {
        if let Some(conn) = self.workers.get(worker).and_then(|e| e.conn) {
            self.effects.push(Effect::Send { conn, msg });
        }
    }

    /// Switches to a new placement configuration: a fresh engine with the same
    /// predictor, told about every worker and job as they are now.
    fn replace_scheduler(&mut self, config: augur_placement::PlacementConfig, now: Now) {
        let predictor = self.scheduler.predictor().clone();
        let scheduler_config = augur_placement::SchedulerConfig {
            placement: config,
            ..self.scheduler.config().clone()
        };
        let mut scheduler = Scheduler::new(scheduler_config, predictor);
        for (id, entry) in &self.workers {
            if let Some(info) = &entry.info {
                scheduler.worker_up(id.clone(), dispatch::worker_spec(info));
                scheduler.set_worker_available(id, entry.placeable());
            }
        }
        for job in self.jobs.values() {
            match (&job.state, &job.worker_id) {
                (JobState::Pending, _) if job.not_before_ms <= now.wall_ms => {
                    scheduler.job_arrived(job.id, dispatch::job_request(job), job.submitted_at_ms)
                }
                (state, Some(worker)) if state.is_active() => scheduler.job_running(
                    job.id,
                    dispatch::job_request(job),
                    worker.clone(),
                    job.started_at_ms.unwrap_or(now.wall_ms),
                ),
                _ => {}
            }
        }
        self.scheduler = scheduler;
        let policy = self.scheduler.policy();
        self.observe(Observation::PolicyChanged(policy));
    }

    /// Counts for the gauges.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for job in self.jobs.values() {
            if job.state == JobState::Pending {
                g.queued.push(job.spec.priority);
            } else {
                g.running += 1;
            }
        }
        g.unschedulable = self.unschedulable.len() as i64;
        for entry in self.workers.values() {
            match (&entry.info, entry.conn) {
                (Some(info), _) if info.draining => g.workers_draining += 1,
                (Some(_), Some(_)) => g.workers_ready += 1,
                (Some(_), None) => g.workers_disconnected += 1,
                (None, _) => {}
            }
        }
        g
    }

    /// Workers and job counts for `ClusterStatus` / `ListWorkers`.
    pub fn snapshot(&self) -> Snapshot {
        let workers = self.workers.values().filter_map(|e| e.view()).collect();
        let running = self.jobs.values().filter(|j| j.state.is_active()).count() as u64;
        Snapshot {
            workers,
            pending: self.jobs.len() as u64 - running,
            running,
        }
    }
}

/// Counts behind the leader's gauges.
#[derive(Clone, Debug, Default)]
pub(crate) struct Gauges {
    /// Priority of every queued job.
    pub queued: Vec<i32>,
    pub running: i64,
    pub unschedulable: i64,
    pub workers_ready: i64,
    pub workers_disconnected: i64,
    pub workers_draining: i64,
}

/// The leader's view for status calls.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub workers: Vec<WorkerView>,
    pub pending: u64,
    pub running: u64,
}
