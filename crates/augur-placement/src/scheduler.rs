//! The scheduler: one placement engine for the live leader and the simulator.
//!
//! A [`Scheduler`] is fed events — a job arrived, a job finished, a worker
//! came, went or changed availability, a new model was trained — and answers
//! [`Scheduler::next_assignments`]: which queued jobs to start now, and where.
//! It owns the queue (a sorted map, so it never re-sorts), each worker's slots
//! and running jobs, and the runtime predictor with its causal history (a
//! finished job's runtime becomes history when the caller reports it).
//!
//! Cost per call: the queue is walked in order and the walk stops as soon as no
//! slot is free anywhere (or after `max_scan` jobs); each examined job looks at
//! every worker once (O(workers), with the predicted backlog of a worker summed
//! over its few running jobs). Nothing is rescanned when time passes.
//!
//! Job keys and worker ids are generic: the leader uses `augur_core::JobId` and
//! `WorkerId`, the simulator plain integers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;

use augur_core::{Capacity, RunRecord};
use augur_predict::{Model, Prediction, RuntimePredictor, Source};
use serde::Serialize;

use crate::policy::{Policy, SchedulerConfig};
use crate::resources::{self, Request, Used};

/// What a worker offers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerSpec {
    pub slots: u32,
    /// Relative speed (1.0 = reference; a job runs `1/speed` as long).
    pub speed: f64,
    pub labels: BTreeMap<String, String>,
    /// CPU and memory it offers to jobs, if it reported them: the requests of
    /// the jobs placed on it never add up to more ([`crate::resources`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
}

/// A job to place (its CPU and memory request are in `features`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    /// Submit-time features (measured fields unused).
    pub features: RunRecord,
    pub slots: u32,
    pub priority: i32,
    pub constraints: BTreeMap<String, String>,
    /// True runtime on a speed-1 worker: only the `oracle` policy reads it.
    pub actual_work_s: Option<f64>,
}

/// One worker considered for a job, with its score (lower is better: the
/// predicted finish in seconds from now for `predictive`/`oracle`, the share of
/// slots in use for `least-loaded`, minus the speed for `fifo-fastest-idle`,
/// the distance in turn for `round-robin`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CandidateScore<W> {
    pub worker: W,
    pub score: f64,
}

/// A placement decision, with what is needed to trace it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision<K, W> {
    pub job: K,
    pub worker: W,
    pub policy: Policy,
    /// Predicted runtime on the chosen worker, seconds (if predicted).
    pub predicted_s: Option<f64>,
    pub prediction_source: Option<Source>,
    pub model_version: Option<u64>,
    /// Best candidates, best first (at most `traced_candidates`).
    pub candidates: Vec<CandidateScore<W>>,
    /// Set when the policy could not be applied as such (e.g. cold start:
    /// placed least-loaded).
    pub fallback: Option<String>,
}

/// Sort key of a queued job: priority (high first), then the policy's order
/// key (submission time, or predicted runtime + aging), then arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    priority: Reverse<i32>,
    order: OrderedF64,
    seq: u64,
}

/// A total order on f64 (no NaN ever enters: keys are finite by construction).
#[derive(Clone, Copy, Debug, PartialEq)]
struct OrderedF64(f64);
impl Eq for OrderedF64 {}
impl PartialOrd for OrderedF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Clone, Debug)]
enum JobState<W> {
    Queued(QueueKey),
    Running { worker: W, started_ms: i64 },
}

#[derive(Clone, Debug)]
struct JobEntry<W> {
    request: JobRequest,
    /// Runtime estimate on a speed-1 worker used for ordering and placement
    /// (the true one for `oracle`).
    estimate_s: f64,
    prediction: Option<Prediction>,
    arrived_ms: i64,
    seq: u64,
    state: JobState<W>,
}

#[derive(Clone, Debug)]
struct WorkerState<K> {
    spec: WorkerSpec,
    available: bool,
    used: u32,
    /// CPU and memory requested by its running jobs.
    reserved: Used,
    running: Vec<K>,
}

impl<K> WorkerState<K> {
    fn add(&mut self, key: K, request: &JobRequest) {
        self.used += request.slots;
        self.reserved.add(Request::of(&request.features));
        self.running.push(key);
    }

    fn free(&self) -> u32 {
        if self.available {
            self.spec.slots.saturating_sub(self.used)
        } else {
            0
        }
    }

    fn fits(&self, request: &JobRequest) -> bool {
        let constraints = &request.constraints;
        self.free() >= request.slots
            && resources::fits_now(
                self.spec.capacity,
                self.reserved,
                Request::of(&request.features),
            )
            && constraints
                .iter()
                .all(|(k, v)| self.spec.labels.get(k) == Some(v))
    }

    fn load(&self) -> f64 {
        self.used as f64 / self.spec.slots.max(1) as f64
    }
}

/// The placement engine. See the module docs.
#[derive(Clone, Debug)]
pub struct Scheduler<K, W> {
    config: SchedulerConfig,
    predictor: RuntimePredictor,
    workers: BTreeMap<W, WorkerState<K>>,
    jobs: HashMap<K, JobEntry<W>>,
    queue: BTreeMap<QueueKey, K>,
    next_seq: u64,
    /// Round-robin cursor: the last worker chosen.
    cursor: Option<W>,
}

impl<K, W> Scheduler<K, W>
where
    K: Clone + Eq + Hash + Debug,
    W: Clone + Ord + Debug,
{
    /// A scheduler with `config` and a predictor (possibly warm: a stored model
    /// and the history rebuilt from stored runs).
    pub fn new(config: SchedulerConfig, predictor: RuntimePredictor) -> Self {
        Scheduler {
            config,
            predictor,
            workers: BTreeMap::new(),
            jobs: HashMap::new(),
            queue: BTreeMap::new(),
            next_seq: 0,
            cursor: None,
        }
    }

    pub fn policy(&self) -> Policy {
        self.config.placement.policy
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn predictor(&self) -> &RuntimePredictor {
        &self.predictor
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn running(&self) -> usize {
        self.jobs.len() - self.queue.len()
    }

    /// Adds or updates a worker (its slots, speed, labels). Jobs running on it
    /// stay.
    pub fn worker_up(&mut self, id: W, spec: WorkerSpec) {
        match self.workers.get_mut(&id) {
            Some(w) => {
                w.spec = spec;
                w.available = true;
            }
            None => {
                // Jobs recorded as running on it before it was known (a new
                // leader loads assignments before the worker registers again)
                // count against its slots from now on.
                let mut state = WorkerState {
                    spec,
                    available: true,
                    used: 0,
                    reserved: Used::default(),
                    running: Vec::new(),
                };
                for (key, entry) in &self.jobs {
                    if matches!(&entry.state, JobState::Running { worker, .. } if *worker == id) {
                        state.add(key.clone(), &entry.request);
                    }
                }
                self.workers.insert(id, state);
            }
        }
    }

    /// Marks a worker (un)able to take new work (draining, disconnected).
    pub fn set_worker_available(&mut self, id: &W, available: bool) {
        if let Some(w) = self.workers.get_mut(id) {
            w.available = available;
        }
    }

    /// Removes a worker. Returns the jobs that were running on it, which the
    /// scheduler forgets (the caller requeues them with [`Self::job_arrived`]
    /// if they are retried).
    pub fn worker_removed(&mut self, id: &W) -> Vec<K> {
        let Some(worker) = self.workers.remove(id) else {
            return Vec::new();
        };
        for key in &worker.running {
            self.jobs.remove(key);
        }
        if self.cursor.as_ref() == Some(id) {
            self.cursor = None;
        }
        worker.running
    }

    /// A job is ready to be placed (submitted, or back after a lost attempt).
    /// Its runtime is predicted now, from the history known now.
    pub fn job_arrived(&mut self, key: K, request: JobRequest, now_ms: i64) {
        self.job_removed(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        let (estimate_s, prediction) = self.estimate(&request);
        let queue_key = self.queue_key(&request, estimate_s, now_ms, seq);
        self.queue.insert(queue_key, key.clone());
        self.jobs.insert(
            key,
            JobEntry {
                request,
                estimate_s,
                prediction,
                arrived_ms: now_ms,
                seq,
                state: JobState::Queued(queue_key),
            },
        );
    }

    /// CPU and memory requested by the jobs running on `worker`, and its
    /// capacity if known.
    pub fn worker_resources(&self, worker: &W) -> Option<(Used, Option<Capacity>)> {
        self.workers
            .get(worker)
            .map(|w| (w.reserved, w.spec.capacity))
    }

    /// Slots in use and offered by `worker`, as the scheduler counts them.
    pub fn worker_slots(&self, worker: &W) -> Option<(u32, u32)> {
        self.workers.get(worker).map(|w| (w.used, w.spec.slots))
    }

    /// Whether the job is queued (not placed).
    pub fn is_queued(&self, key: &K) -> bool {
        matches!(
            self.jobs.get(key).map(|e| &e.state),
            Some(JobState::Queued(_))
        )
    }

    /// How many queued jobs are ahead of `key` (`None` if it is not queued).
    /// Walks the queue: for explaining one job, not for a hot path.
    pub fn queue_position(&self, key: &K) -> Option<usize> {
        let JobState::Queued(queue_key) = &self.jobs.get(key)?.state else {
            return None;
        };
        Some(self.queue.range(..*queue_key).count())
    }

    /// A job already running on `worker` since `started_ms` (a new leader
    /// taking over running work). Counted against the worker's slots at once.
    pub fn job_running(&mut self, key: K, request: JobRequest, worker: W, started_ms: i64) {
        self.job_removed(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        let (estimate_s, prediction) = self.estimate(&request);
        if let Some(w) = self.workers.get_mut(&worker) {
            w.add(key.clone(), &request);
        }
        self.jobs.insert(
            key,
            JobEntry {
                request,
                estimate_s,
                prediction,
                arrived_ms: started_ms,
                seq,
                state: JobState::Running { worker, started_ms },
            },
        );
    }

    /// The prediction a job was placed with, if any.
    pub fn prediction(&self, key: &K) -> Option<&Prediction> {
        self.jobs.get(key)?.prediction.as_ref()
    }

    /// A job ended on its worker. Frees its slots; `run`, if given, is the
    /// finished run's record and joins the predictor's history now.
    pub fn job_finished(&mut self, key: &K, run: Option<&RunRecord>) {
        self.job_removed(key);
        if let Some(run) = run {
            self.predictor.observe(run);
        }
    }

    /// Forgets a job wherever it is (cancelled while queued, refused by the
    /// state machine, …), freeing its slots if it was running.
    pub fn job_removed(&mut self, key: &K) {
        let Some(entry) = self.jobs.remove(key) else {
            return;
        };
        match entry.state {
            JobState::Queued(queue_key) => {
                self.queue.remove(&queue_key);
            }
            JobState::Running { worker, .. } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.used = w.used.saturating_sub(entry.request.slots);
                    w.reserved.remove(Request::of(&entry.request.features));
                    w.running.retain(|k| k != key);
                }
            }
        }
    }

    /// The actual start time of a running job (the live leader learns it from
    /// the worker's `Started`); assignments are assumed to start at once.
    pub fn job_started(&mut self, key: &K, now_ms: i64) {
        if let Some(JobEntry {
            state: JobState::Running { started_ms, .. },
            ..
        }) = self.jobs.get_mut(key)
        {
            *started_ms = now_ms;
        }
    }

    /// Installs a newly trained model and re-predicts the queued jobs with it
    /// (O(queue · log queue)).
    pub fn set_model(&mut self, model: Option<Model>) {
        self.predictor.set_model(model);
        self.refresh_queue();
    }

    /// Re-predicts every queued job from the history known now.
    pub fn refresh_queue(&mut self) {
        let keys: Vec<K> = self.queue.values().cloned().collect();
        for key in keys {
            let Some(entry) = self.jobs.get(&key) else {
                continue;
            };
            let JobState::Queued(old) = entry.state else {
                continue;
            };
            let (estimate_s, prediction) = self.estimate(&entry.request);
            let new = self.queue_key(&entry.request, estimate_s, entry.arrived_ms, entry.seq);
            self.queue.remove(&old);
            self.queue.insert(new, key.clone());
            if let Some(entry) = self.jobs.get_mut(&key) {
                entry.estimate_s = estimate_s;
                entry.prediction = prediction;
                entry.state = JobState::Queued(new);
            }
        }
    }

    /// The runtime a running job is now expected to take in total on its
    /// worker, seconds: its prediction, or — once it has overrun it —
    /// `overrun_factor ×` its elapsed time.
    pub fn expected_total_s(&self, key: &K, now_ms: i64) -> Option<f64> {
        let entry = self.jobs.get(key)?;
        let JobState::Running { worker, started_ms } = &entry.state else {
            return None;
        };
        let speed = self.workers.get(worker).map(|w| w.spec.speed)?;
        Some(self.corrected_total(entry.estimate_s / speed, *started_ms, now_ms))
    }

    fn corrected_total(&self, predicted_s: f64, started_ms: i64, now_ms: i64) -> f64 {
        let elapsed = (now_ms - started_ms).max(0) as f64 / 1000.0;
        if elapsed < predicted_s {
            predicted_s
        } else {
            elapsed * self.config.placement.overrun_factor.max(1.0)
        }
    }

    fn estimate(&self, request: &JobRequest) -> (f64, Option<Prediction>) {
        match self.policy() {
            Policy::Oracle if request.actual_work_s.is_some() => {
                (request.actual_work_s.unwrap_or(0.0).max(0.0), None)
            }
            Policy::Predictive | Policy::Oracle => {
                let prediction = self.predictor.predict(&request.features);
                (prediction.seconds, Some(prediction))
            }
            _ => (0.0, None),
        }
    }

    fn queue_key(&self, request: &JobRequest, estimate_s: f64, now_ms: i64, seq: u64) -> QueueKey {
        let order = if self.policy().orders_by_runtime() {
            let aging = self.config.placement.aging_rate.max(0.0);
            estimate_s + aging * (now_ms as f64 / 1000.0)
        } else {
            now_ms as f64
        };
        QueueKey {
            priority: Reverse(request.priority),
            order: OrderedF64(if order.is_finite() { order } else { f64::MAX }),
            seq,
        }
    }

    /// Predicted seconds until the running jobs of `worker` are done, summed
    /// over its slots (overruns corrected).
    fn backlog_s(&self, worker: &WorkerState<K>, now_ms: i64) -> f64 {
        worker
            .running
            .iter()
            .filter_map(|k| self.jobs.get(k))
            .map(|entry| match &entry.state {
                JobState::Running { started_ms, .. } => {
                    let total = self.corrected_total(
                        entry.estimate_s / worker.spec.speed,
                        *started_ms,
                        now_ms,
                    );
                    let elapsed = (now_ms - started_ms).max(0) as f64 / 1000.0;
                    (total - elapsed).max(0.0) * entry.request.slots as f64
                }
                JobState::Queued(_) => 0.0,
            })
            .sum()
    }

    /// Which queued jobs to start now, and where. The scheduler counts each
    /// returned job as running on its worker from `now_ms`.
    pub fn next_assignments(&mut self, now_ms: i64) -> Vec<Decision<K, W>> {
        let mut free: u64 = self.workers.values().map(|w| w.free() as u64).sum();
        let mut decisions = Vec::new();
        if free == 0 || self.queue.is_empty() {
            return decisions;
        }
        let mut placed: Vec<QueueKey> = Vec::new();
        let ordered: Vec<(QueueKey, K)> = self
            .queue
            .iter()
            .take(self.config.max_scan.max(1))
            .map(|(q, k)| (*q, k.clone()))
            .collect();
        for (queue_key, key) in ordered {
            if free == 0 {
                break;
            }
            let Some(entry) = self.jobs.get(&key) else {
                continue;
            };
            let Some(decision) = self.choose(&key, entry, now_ms) else {
                continue;
            };
            let slots = entry.request.slots;
            let request = entry.request.clone();
            if let Some(w) = self.workers.get_mut(&decision.worker) {
                w.add(key.clone(), &request);
            }
            if let Some(entry) = self.jobs.get_mut(&key) {
                entry.state = JobState::Running {
                    worker: decision.worker.clone(),
                    started_ms: now_ms,
                };
            }
            if self.policy() == Policy::RoundRobin {
                self.cursor = Some(decision.worker.clone());
            }
            free = free.saturating_sub(slots as u64);
            placed.push(queue_key);
            decisions.push(decision);
        }
        for queue_key in placed {
            self.queue.remove(&queue_key);
        }
        decisions
    }

    /// The worker for one job under the policy, or `None` if none is feasible.
    fn choose(&self, key: &K, entry: &JobEntry<W>, now_ms: i64) -> Option<Decision<K, W>> {
        let request = &entry.request;
        let feasible = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, (_, w))| w.fits(request))
            .map(|(rank, (id, w))| (rank, id, w));
        let policy = self.policy();
        let cold = entry.prediction.as_ref().and_then(|p| match &p.source {
            Source::Fallback(reason) if policy == Policy::Predictive => Some(reason.to_string()),
            _ => None,
        });
        let mut scored: Vec<(f64, &W)> = match (policy, &cold) {
            (Policy::RoundRobin, _) => {
                // Distance in turn after the last chosen worker (ids wrap).
                let n = self.workers.len() as f64;
                feasible
                    .map(|(rank, id, _)| {
                        let wrap = match &self.cursor {
                            Some(c) if id > c => 0.0,
                            Some(_) => n,
                            None => 0.0,
                        };
                        (wrap + rank as f64, id)
                    })
                    .collect()
            }
            (Policy::LeastLoaded, _) | (Policy::Predictive, Some(_)) => {
                feasible.map(|(_, id, w)| (w.load(), id)).collect()
            }
            (Policy::FifoFastestIdle, _) => feasible
                .map(|(_, id, w)| (-w.spec.speed + w.load() * 1e-6, id))
                .collect(),
            (Policy::Predictive, None) | (Policy::Oracle, _) => feasible
                .map(|(_, id, w)| {
                    let speed = w.spec.speed;
                    let finish = self.backlog_s(w, now_ms) / w.spec.slots.max(1) as f64
                        + entry.estimate_s / speed;
                    (finish, id)
                })
                .collect(),
        };
        if scored.is_empty() {
            return None;
        }
        // Stable: equal scores keep worker-id order, so choices are deterministic.
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        let best = scored[0].1.clone();
        let speed = self.workers.get(&best).map(|w| w.spec.speed).unwrap_or(1.0);
        Some(Decision {
            job: key.clone(),
            worker: best,
            policy,
            predicted_s: entry
                .prediction
                .as_ref()
                .map(|p| p.seconds_on(speed))
                .or((policy == Policy::Oracle).then(|| entry.estimate_s / speed)),
            prediction_source: entry.prediction.as_ref().map(|p| p.source.clone()),
            model_version: entry.prediction.as_ref().and_then(|p| p.model_version),
            candidates: scored
                .iter()
                .take(self.config.traced_candidates)
                .map(|(score, id)| CandidateScore {
                    worker: (*id).clone(),
                    score: *score,
                })
                .collect(),
            fallback: cold.map(|reason| format!("{reason}: placed least-loaded")),
        })
    }
}
