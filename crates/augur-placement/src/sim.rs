//! A discrete-event cluster simulator driven by the live [`Scheduler`].
//!
//! Workers come from a spec like `8x1,4x2,4x4` (count × speed, optionally
//! `:slots`, default one slot each). A job's true work is its recorded runtime
//! on a speed-1 worker; on a worker of speed `s` it takes `work / s`. Arrivals
//! keep the recorded order and gaps, uniformly stretched or squeezed so that the
//! offered load (total work / (capacity × span)) equals the target.
//!
//! Events are processed in time order, finishes before arrivals at equal
//! times; after each batch of simultaneous events the scheduler is asked for
//! assignments. A job's runtime joins the predictor's history only at its
//! (simulated) finish — predictions are causal in simulated time — and the
//! `predictive` policy's model is retrained on the runs finished so far, on the
//! same schedule as the offline evaluation. Everything is deterministic: the
//! same records and options give the same result.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use augur_core::RunRecord;
use augur_predict::history::reference_runtime_s;
use augur_predict::{train, RuntimePredictor, TrainConfig};
use serde::{Deserialize, Serialize};

use crate::metrics::{placement_quality, PlacementQuality};
use crate::policy::{Policy, SchedulerConfig};
use crate::scheduler::{JobRequest, Scheduler, WorkerSpec};

/// Why a simulation cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("bad worker spec {spec:?}: {reason} (expected e.g. \"8x1,4x2,4x4\" or \"4x2:8\" for 8 slots)")]
    WorkerSpec { spec: String, reason: String },
    #[error("load must be a positive number, got {0}")]
    Load(f64),
    #[error("no jobs to simulate")]
    NoJobs,
    #[error("oracle estimates: {have} given for {need} jobs, or not all finite")]
    OracleEstimates { have: usize, need: usize },
}

/// `count` identical workers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerGroup {
    pub count: u32,
    pub speed: f64,
    pub slots: u32,
}

/// Most workers a spec may describe (keeps a typo from allocating millions).
const MAX_WORKERS: u64 = 100_000;

/// Parses `COUNTxSPEED[:SLOTS],...`.
pub fn parse_workers(spec: &str) -> Result<Vec<WorkerGroup>, SimError> {
    let bad = |reason: &str| SimError::WorkerSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let mut groups = Vec::new();
    let mut total: u64 = 0;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (count, rest) = part
            .split_once(['x', 'X'])
            .ok_or_else(|| bad(&format!("{part:?} has no 'x'")))?;
        let (speed, slots) = match rest.split_once(':') {
            Some((speed, slots)) => (speed, Some(slots)),
            None => (rest, None),
        };
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| bad(&format!("count {count:?} is not a whole number")))?;
        let speed: f64 = speed
            .trim()
            .parse()
            .map_err(|_| bad(&format!("speed {speed:?} is not a number")))?;
        if !(speed.is_finite() && speed > 0.0 && speed <= 1e6) {
            return Err(bad(&format!("speed {speed} must be positive")));
        }
        let slots: u32 = match slots {
            Some(s) => s
                .trim()
                .parse()
                .map_err(|_| bad(&format!("slots {s:?} is not a whole number")))?,
            None => 1,
        };
        if count == 0 || slots == 0 || slots > 1024 {
            return Err(bad(
                "counts and slots must be 1 or more (slots at most 1024)",
            ));
        }
        total += count as u64;
        if total > MAX_WORKERS {
            return Err(bad(&format!("more than {MAX_WORKERS} workers")));
        }
        groups.push(WorkerGroup {
            count,
            speed,
            slots,
        });
    }
    if groups.is_empty() {
        return Err(bad("no workers"));
    }
    Ok(groups)
}

/// Total work per second the workers can do (speed × slots, summed).
pub fn capacity(workers: &[WorkerGroup]) -> f64 {
    workers
        .iter()
        .map(|g| g.count as f64 * g.speed * g.slots as f64)
        .sum()
}

/// Simulation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOptions {
    pub workers: Vec<WorkerGroup>,
    /// Target offered load; `None` keeps the recorded arrival times.
    pub load: Option<f64>,
    pub scheduler: SchedulerConfig,
    /// Retrain the `predictive` model after this many finishes (sooner while
    /// the history is small).
    pub retrain_every: usize,
    pub train: TrainConfig,
    /// What the `oracle` policy believes each job's work to be (seconds on a
    /// speed-1 worker, one per record); `None` = the true runtimes. For
    /// what-if studies: how well would placement do with these estimates?
    /// Jobs still run their true runtimes.
    pub oracle_estimates: Option<Vec<f64>>,
}

impl SimOptions {
    pub fn new(workers: Vec<WorkerGroup>, policy: Policy) -> Self {
        SimOptions {
            workers,
            load: None,
            scheduler: SchedulerConfig::with_policy(policy),
            retrain_every: 2000,
            train: TrainConfig::default(),
            oracle_estimates: None,
        }
    }
}

/// What happened to one job.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct JobOutcome {
    pub submit_ms: i64,
    pub start_ms: i64,
    pub finish_ms: i64,
    /// Index of the worker that ran it.
    pub worker: usize,
    /// Runtime on that worker, seconds.
    pub runtime_s: f64,
    /// Runs in the predictor's history when the job arrived.
    pub history_at_arrival: u64,
    /// The runtime the policy expected on a speed-1 worker when it placed the
    /// job, if it predicts.
    pub predicted_work_s: Option<f64>,
}

/// Result of one simulation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimResult {
    pub policy: Policy,
    /// Per input record, in input order.
    pub outcomes: Vec<JobOutcome>,
    pub quality: PlacementQuality,
    pub trainings: u64,
    /// Decisions that fell back (cold start, no model).
    pub fallbacks: u64,
}

/// Arrival times (ms) of `records` rescaled so the offered load on `workers`
/// is `load`; the first arrival stays where it was.
pub fn rescaled_arrivals(
    records: &[RunRecord],
    workers: &[WorkerGroup],
    load: Option<f64>,
) -> Result<Vec<i64>, SimError> {
    let submits: Vec<i64> = records.iter().map(|r| r.submitted_at_ms).collect();
    let Some(load) = load else {
        return Ok(submits);
    };
    if !(load.is_finite() && load > 0.0) {
        return Err(SimError::Load(load));
    }
    let first = submits.iter().copied().min().unwrap_or(0);
    let last = submits.iter().copied().max().unwrap_or(0);
    let span_s = (last - first) as f64 / 1000.0;
    let work: f64 = records.iter().map(reference_runtime_s).sum();
    if span_s <= 0.0 || work <= 0.0 {
        return Ok(submits);
    }
    let factor = work / (capacity(workers) * span_s * load);
    Ok(submits
        .iter()
        .map(|s| first + ((s - first) as f64 * factor).round() as i64)
        .collect())
}

/// Runs `records` through the cluster under `options`.
pub fn simulate(records: &[RunRecord], options: &SimOptions) -> Result<SimResult, SimError> {
    if records.is_empty() {
        return Err(SimError::NoJobs);
    }
    if let Some(estimates) = &options.oracle_estimates {
        if estimates.len() != records.len() || !estimates.iter().all(|e| e.is_finite()) {
            return Err(SimError::OracleEstimates {
                have: estimates.len(),
                need: records.len(),
            });
        }
    }
    let arrivals = rescaled_arrivals(records, &options.workers, options.load)?;
    let policy = options.scheduler.placement.policy;
    let predictor = RuntimePredictor::new(options.scheduler.placement.predictor.clone());
    let mut scheduler: Scheduler<usize, usize> =
        Scheduler::new(options.scheduler.clone(), predictor);
    let mut speeds = Vec::new();
    for group in &options.workers {
        for _ in 0..group.count {
            let id = speeds.len();
            speeds.push(group.speed);
            scheduler.worker_up(
                id,
                WorkerSpec {
                    slots: group.slots,
                    speed: group.speed,
                    labels: [("speed".to_string(), group.speed.to_string())].into(),
                    capacity: None,
                },
            );
        }
    }

    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| (arrivals[i], i));
    let mut next_arrival = 0usize;
    let mut finishing: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut outcomes: Vec<JobOutcome> = arrivals
        .iter()
        .map(|&submit_ms| JobOutcome {
            submit_ms,
            start_ms: -1,
            finish_ms: -1,
            worker: 0,
            runtime_s: 0.0,
            history_at_arrival: 0,
            predicted_work_s: None,
        })
        .collect();
    let learns = policy == Policy::Predictive;
    let mut finished: Vec<RunRecord> = Vec::new();
    let mut since_training = 0usize;
    let mut trainings = 0u64;
    let mut fallbacks = 0u64;

    loop {
        let next_finish = finishing.peek().map(|Reverse((t, _))| *t);
        let next_submit = order.get(next_arrival).map(|&i| arrivals[i]);
        let now = match (next_finish, next_submit) {
            (None, None) => break,
            (Some(f), None) => f,
            (None, Some(s)) => s,
            (Some(f), Some(s)) => f.min(s),
        };
        while let Some(&Reverse((t, i))) = finishing.peek() {
            if t > now {
                break;
            }
            finishing.pop();
            let outcome = &outcomes[i];
            let mut run = records[i].clone();
            run.submitted_at_ms = outcome.submit_ms;
            run.queue_wait_ms = (outcome.start_ms - outcome.submit_ms).max(0) as u64;
            run.runtime_ms = (outcome.runtime_s * 1000.0).round() as u64;
            run.worker_id = format!("w{}", outcome.worker);
            run.worker_speed = speeds[outcome.worker];
            run.finished_at_ms = outcome.finish_ms;
            scheduler.job_finished(&i, Some(&run));
            if learns {
                finished.push(run);
                since_training += 1;
            }
        }
        if learns {
            let every = options.retrain_every.min((finished.len() / 2).max(1));
            let due = scheduler.predictor().model().is_none() || since_training >= every;
            if due && finished.len() >= options.train.min_records {
                if let Ok(model) = train(&finished, &options.train, trainings + 1, now) {
                    scheduler.set_model(Some(model));
                    trainings += 1;
                }
                since_training = 0;
            }
        }
        while let Some(&i) = order.get(next_arrival) {
            if arrivals[i] > now {
                break;
            }
            next_arrival += 1;
            let mut features = records[i].clone();
            features.submitted_at_ms = arrivals[i];
            outcomes[i].history_at_arrival = scheduler.predictor().history().len();
            let request = JobRequest {
                features,
                slots: 1,
                priority: records[i].priority,
                constraints: Default::default(),
                actual_work_s: Some(match &options.oracle_estimates {
                    Some(estimates) => estimates[i],
                    None => reference_runtime_s(&records[i]),
                }),
            };
            scheduler.job_arrived(i, request, now);
        }
        for decision in scheduler.next_assignments(now) {
            let i = decision.job;
            if decision.fallback.is_some() {
                fallbacks += 1;
            }
            let runtime_s = reference_runtime_s(&records[i]) / speeds[decision.worker];
            let finish = now + (runtime_s * 1000.0).round() as i64;
            outcomes[i].start_ms = now;
            outcomes[i].finish_ms = finish;
            outcomes[i].worker = decision.worker;
            outcomes[i].runtime_s = runtime_s;
            outcomes[i].predicted_work_s =
                decision.predicted_s.map(|p| p * speeds[decision.worker]);
            finishing.push(Reverse((finish, i)));
        }
    }
    let quality = placement_quality(policy.name(), &outcomes);
    Ok(SimResult {
        policy,
        outcomes,
        quality,
        trainings,
        fallbacks,
    })
}
