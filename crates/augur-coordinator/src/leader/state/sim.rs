//! A deterministic world around the core, for the property and simulation
//! tests: a store that commits the core's writes only when the test says so
//! (and only then runs their follow-ups), workers with inboxes and a fake
//! clock. Every step checks the invariants the core promises; a violation
//! panics with what broke.

use std::collections::{BTreeMap, HashMap, HashSet};

use augur_core::{
    AttemptOutcome, AttemptReport, JobId, JobRecord, JobSpecInput, Usage, WorkerId, WorkerInfo,
};

use super::{
    AfterCommit, AttemptKey, ConnId, Effect, FromWorker, Input, LeaderState, Now, Timing, ToWorker,
};

/// Reply handles in tests are plain numbers.
pub(crate) type Reply = u64;

pub(crate) struct World {
    pub core: LeaderState<Reply>,
    pub now: Now,
    /// Writes handed to the store, not yet committed.
    pub uncommitted: Vec<(JobRecord, Option<AfterCommit<Reply>>)>,
    /// What the store holds.
    pub store: HashMap<JobId, JobRecord>,
    /// Jobs the store ever held in a terminal state.
    pub ended: HashSet<JobId>,
    /// Every assignment sent, with the worker it went to.
    pub assigned: HashSet<AttemptKey>,
    /// Messages delivered to each connection, oldest first.
    pub inbox: BTreeMap<ConnId, Vec<ToWorker>>,
    /// Live connection of each worker (the world's view).
    pub conn_of: BTreeMap<WorkerId, ConnId>,
    pub refused: HashSet<ConnId>,
    pub next_conn: ConnId,
    /// Attempts each worker runs (started or not), by connection-independent worker.
    pub holding: BTreeMap<WorkerId, Vec<AttemptKey>>,
    /// Messages sent by workers so far (for duplicates and stale re-sends).
    pub sent_by_workers: Vec<(WorkerId, FromWorker)>,
    pub cancel_answers: Vec<Reply>,
    pub cancels_issued: u64,
    pub submitted: Vec<JobId>,
    pub slots: BTreeMap<WorkerId, u32>,
    pub epoch: i64,
    pub leases: BTreeMap<WorkerId, i64>,
    /// Registrations the core asked for, written at the next commit.
    pub registering: Vec<WorkerInfo>,
    /// Registry events the store owes the core (written registrations,
    /// released leases), delivered at the next commit.
    pub registry_events: Vec<Input<Reply>>,
    pub next_lease: i64,
    /// Leases the core asked to renew, in order.
    pub renewed: Vec<i64>,
}

pub(crate) fn worker_id(n: usize) -> WorkerId {
    WorkerId::new(format!("w{n}")).expect("valid worker id")
}

pub(crate) fn worker_info(id: &WorkerId, slots: u32, lease_id: i64) -> WorkerInfo {
    WorkerInfo {
        id: id.clone(),
        slots,
        labels: Default::default(),
        version: "test".into(),
        executor: "process".into(),
        registered_at_ms: 0,
        lease_id,
        draining: false,
        capacity: None,
    }
}

pub(crate) fn job(n: usize, slots: u32, max_attempts: u32, now_ms: i64) -> JobRecord {
    let spec = JobSpecInput {
        name: format!("job-{n}"),
        command: "true".into(),
        retry: augur_core::spec::RetryInput {
            max_attempts,
            initial_backoff: "1s".into(),
            ..Default::default()
        },
        resources: augur_core::spec::ResourcesInput {
            slots,
            ..Default::default()
        },
        ..Default::default()
    }
    .validate()
    .expect("valid spec");
    JobRecord::new(JobId::generate(), spec, now_ms)
}

pub(crate) fn scheduler() -> augur_placement::Scheduler<JobId, WorkerId> {
    super::super::placement_engine(augur_placement::PlacementConfig::default(), None, &[])
}

pub(crate) fn report(key: AttemptKey, exit_code: i32, now_ms: i64) -> AttemptReport {
    AttemptReport {
        attempt: key.attempt,
        outcome: AttemptOutcome::Exited {
            exit_code: Some(exit_code),
            signal: None,
        },
        started_at_ms: now_ms - 10,
        finished_at_ms: now_ms,
        usage: Usage {
            runtime_ms: 10,
            ..Default::default()
        },
        stdout_tail: String::new(),
        stderr_tail: String::new(),
        message: String::new(),
        outputs: Default::default(),
    }
}

impl World {
    /// A leader taking over `active` jobs with `workers` (id, slots) registered.
    pub fn new(workers: &[u32], active: Vec<JobRecord>, timing: Timing) -> Self {
        let now = Now {
            wall_ms: 1_000_000,
            mono_ms: 0,
        };
        let mut leases = BTreeMap::new();
        let mut slots = BTreeMap::new();
        let infos: Vec<WorkerInfo> = workers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let id = worker_id(i);
                leases.insert(id.clone(), 100 + i as i64);
                slots.insert(id.clone(), *s);
                worker_info(&id, *s, 100 + i as i64)
            })
            .collect();
        let store = active.iter().map(|j| (j.id, j.clone())).collect();
        let core = LeaderState::new(timing, 1, scheduler(), active, infos, now);
        World {
            core,
            now,
            uncommitted: Vec::new(),
            store,
            ended: HashSet::new(),
            assigned: HashSet::new(),
            inbox: BTreeMap::new(),
            conn_of: BTreeMap::new(),
            refused: HashSet::new(),
            next_conn: 1,
            holding: BTreeMap::new(),
            sent_by_workers: Vec::new(),
            cancel_answers: Vec::new(),
            cancels_issued: 0,
            submitted: Vec::new(),
            slots,
            epoch: 1,
            leases,
            registering: Vec::new(),
            registry_events: Vec::new(),
            next_lease: 10_000,
            renewed: Vec::new(),
        }
    }

    /// The leader is demoted (or dies) and another takes over: writes not yet
    /// committed are lost with their follow-ups, every stream closes, and a
    /// new core loads what the store holds and the registrations, as a new
    /// leader does. Workers keep what they run and attach again later.
    pub fn failover(&mut self) {
        // Registration writes in flight are lost with the term.
        self.registering.clear();
        self.registry_events.clear();
        // A caller whose cancel was not yet durable gets "leadership ended
        // during the call; retry" (its reply handle is dropped).
        for (_, then) in std::mem::take(&mut self.uncommitted) {
            if let Some(AfterCommit::Reply(reply)) = then {
                self.cancel_answers.push(reply);
            }
        }
        self.epoch += 1;
        for conn in std::mem::take(&mut self.conn_of).into_values() {
            self.refused.insert(conn);
        }
        let active: Vec<JobRecord> = self
            .store
            .values()
            .filter(|j| !j.state.is_terminal())
            .cloned()
            .collect();
        let registered: Vec<WorkerInfo> = self
            .core
            .workers
            .values()
            .filter_map(|e| e.info.clone())
            .collect();
        self.core = LeaderState::new(
            self.core.timing.clone(),
            self.epoch,
            scheduler(),
            active,
            registered,
            self.now,
        );
    }

    pub fn input(&mut self, input: Input<Reply>) {
        let effects = self.core.handle(input, self.now);
        for effect in effects {
            self.effect(effect);
        }
        self.check_slots();
    }

    fn deliver(&mut self, conn: ConnId, msg: ToWorker) {
        if self.refused.contains(&conn) {
            return;
        }
        if let ToWorker::Assign { record } = &msg {
            let key = AttemptKey {
                job: record.id,
                attempt: record.attempt,
            };
            // Sent only once durable: the store holds this very assignment.
            let stored = self.store.get(&record.id).expect("assigned job is stored");
            assert!(
                stored.attempt >= record.attempt,
                "assignment {key:?} sent before its record was durable"
            );
            assert!(self.assigned.insert(key), "attempt {key:?} assigned twice");
            let worker = record.worker_id.clone().expect("assigned to a worker");
            assert_eq!(self.conn_of.get(&worker), Some(&conn));
            self.holding.entry(worker).or_default().push(key);
        }
        self.inbox.entry(conn).or_default().push(msg);
    }

    fn effect(&mut self, effect: Effect<Reply>) {
        match effect {
            Effect::Write { record, then, .. } => self.uncommitted.push((*record, then)),
            Effect::Send { conn, msg } => {
                assert!(
                    !matches!(msg, ToWorker::Assign { .. }),
                    "an assignment must follow a durable write"
                );
                self.deliver(conn, msg);
            }
            Effect::Refuse { conn, .. } => {
                self.refused.insert(conn);
                self.conn_of.retain(|_, c| *c != conn);
            }
            Effect::Load(ids) => {
                let loaded = ids
                    .iter()
                    .filter_map(|id| self.store.get(id))
                    .cloned()
                    .collect();
                self.input(Input::Loaded(loaded));
            }
            Effect::CancelFromStore { reply, .. } | Effect::CancelRefused { reply, .. } => {
                self.cancel_answers.push(reply)
            }
            Effect::Register(info) => self.registering.push(*info),
            Effect::RenewLease(lease) => self.renewed.push(lease),
            Effect::ReleaseLease(lease) => {
                if let Some((w, _)) = self.leases.iter().find(|(_, l)| **l == lease) {
                    self.registry_events
                        .push(Input::WorkerDeregistered(w.clone()));
                }
            }
            Effect::MarkDraining(w) => {
                if let Some(mut info) = self.core.workers.get(&w).and_then(|e| e.info.clone()) {
                    info.draining = true;
                    self.registry_events
                        .push(Input::WorkerRegistered(Box::new(info)));
                }
            }
            Effect::Observe(_) => {}
        }
    }

    /// The store writes the registrations asked for (under a new lease
    /// unless one is named) and delivers the registry's events.
    pub fn commit_registry(&mut self) {
        for mut info in std::mem::take(&mut self.registering) {
            if info.lease_id == 0 {
                self.next_lease += 1;
                info.lease_id = self.next_lease;
            }
            self.leases.insert(info.id.clone(), info.lease_id);
            self.registry_events
                .push(Input::WorkerRegistered(Box::new(info)));
        }
        for event in std::mem::take(&mut self.registry_events) {
            self.input(event);
        }
    }

    /// A registration write the core asked for fails.
    pub fn fail_registration(&mut self, w: &WorkerId) {
        let before = self.registering.len();
        self.registering.retain(|info| &info.id != w);
        if self.registering.len() != before {
            self.input(Input::RegistrationFailed { worker: w.clone() });
        }
    }

    /// The store commits everything handed to it, then runs the follow-ups.
    pub fn commit(&mut self) {
        self.commit_registry();
        let batch = std::mem::take(&mut self.uncommitted);
        let mut follow_ups = Vec::new();
        for (record, then) in batch {
            let was_ended = self.ended.contains(&record.id);
            assert!(
                !was_ended || record.state.is_terminal(),
                "job {} left a terminal state (now {})",
                record.id,
                record.state
            );
            if let Some(old) = self.store.get(&record.id) {
                assert!(record.attempt >= old.attempt, "attempt number went down");
            }
            if record.state.is_terminal() {
                self.ended.insert(record.id);
            }
            self.store.insert(record.id, record);
            follow_ups.extend(then);
        }
        for then in follow_ups {
            match then {
                AfterCommit::Send { conn, msg, .. } => {
                    if self.conn_of.values().any(|c| *c == conn) {
                        self.deliver(conn, msg);
                    } else if let ToWorker::Assign { record } = msg {
                        let key = AttemptKey {
                            job: record.id,
                            attempt: record.attempt,
                        };
                        let worker = record.worker_id.clone().expect("assigned");
                        self.input(Input::DeliveryFailed {
                            worker,
                            attempt: key,
                        });
                    }
                }
                AfterCommit::Reply(reply) => self.cancel_answers.push(reply),
            }
        }
    }

    /// The scheduler's ledger agrees with the jobs the core has out on each
    /// worker, and never exceeds a worker's slots.
    pub fn check_slots(&self) {
        let mut out: BTreeMap<&WorkerId, u32> = BTreeMap::new();
        for job in self.core.jobs.values() {
            if let (true, Some(w)) = (job.state.is_active(), &job.worker_id) {
                *out.entry(w).or_default() += job.spec.resources.slots;
            }
        }
        for (worker, slots) in &self.slots {
            if let Some((used, offered)) = self.core.scheduler.worker_slots(worker) {
                assert!(used <= offered, "{worker}: {used} slots used of {offered}");
                assert!(*slots == offered);
                let expected = out.get(worker).copied().unwrap_or(0);
                assert_eq!(
                    used, expected,
                    "{worker}: ledger {used}, jobs out {expected}"
                );
            }
        }
    }

    pub fn advance(&mut self, ms: i64) {
        self.now.wall_ms += ms;
        self.now.mono_ms += ms;
        self.input(Input::Tick);
    }

    pub fn submit(&mut self, slots: u32, max_attempts: u32) -> JobId {
        let record = job(self.submitted.len(), slots, max_attempts, self.now.wall_ms);
        let id = record.id;
        self.store.insert(id, record.clone());
        self.submitted.push(id);
        self.input(Input::Submitted(Box::new(record)));
        id
    }

    /// Worker `w` opens a stream, naming what it holds and its lease.
    pub fn attach(&mut self, w: &WorkerId) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        if let Some(old) = self.conn_of.insert(w.clone(), conn) {
            // The world's worker moved to a new stream: the old one is gone.
            self.input(Input::Detached {
                worker: w.clone(),
                conn: old,
            });
        }
        let running = self.holding.get(w).cloned().unwrap_or_default();
        let lease_id = self.leases.get(w).copied().unwrap_or(0);
        let announced = Box::new(worker_info(w, self.slots[w], 0));
        self.input(Input::Attached {
            worker: w.clone(),
            conn,
            running,
            lease_id,
            announced,
        });
        conn
    }

    pub fn send_from(&mut self, w: &WorkerId, msg: FromWorker) {
        let Some(conn) = self.conn_of.get(w).copied() else {
            return;
        };
        self.sent_by_workers.push((w.clone(), msg.clone()));
        self.input(Input::Message {
            worker: w.clone(),
            conn,
            msg,
        });
    }

    /// Worker `w` says the attempt's process started now.
    pub fn start(&mut self, w: &WorkerId, key: AttemptKey) {
        let at_ms = self.now.wall_ms;
        self.send_from(
            w,
            FromWorker::Started {
                attempt: key,
                at_ms,
            },
        );
    }

    /// Worker `w` runs everything it holds to the end with `exit_code`.
    pub fn finish_all(&mut self, w: &WorkerId, exit_code: i32) {
        let held = std::mem::take(self.holding.entry(w.clone()).or_default());
        for key in held {
            let at_ms = self.now.wall_ms;
            self.send_from(
                w,
                FromWorker::Started {
                    attempt: key,
                    at_ms,
                },
            );
            let report = report(key, exit_code, at_ms);
            self.send_from(
                w,
                FromWorker::Finished {
                    attempt: key,
                    report: Ok(Box::new(report)),
                    outcome: "exited",
                },
            );
        }
    }

    /// Jobs the store does not hold as terminal.
    pub fn unfinished(&self) -> Vec<JobId> {
        self.submitted
            .iter()
            .filter(|id| !self.store.get(id).is_some_and(|j| j.state.is_terminal()))
            .copied()
            .collect()
    }

    /// Runs the cluster with every worker attached and healthy until every
    /// job ended (or `rounds` pass): the liveness half of the properties.
    pub fn settle(&mut self, rounds: usize) {
        let workers: Vec<WorkerId> = self.slots.keys().cloned().collect();
        for w in &workers {
            // Healthy workers hold a registration (they re-register when
            // their lease is lost) and a stream.
            let info = worker_info(w, self.slots[w], self.leases[w]);
            self.input(Input::WorkerRegistered(Box::new(info)));
            if !self.conn_of.contains_key(w) {
                self.attach(w);
            }
        }
        for _ in 0..rounds {
            self.commit();
            for w in &workers {
                self.finish_all(w, 0);
            }
            self.commit();
            self.advance(20_000);
            if self.unfinished().is_empty() && self.uncommitted.is_empty() {
                return;
            }
        }
    }
}
