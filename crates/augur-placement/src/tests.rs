//! Tests of the scheduler and the simulator: feasibility, aging, overrun
//! correction, determinism, causality and the oracle's advantage.

use std::collections::BTreeMap;

use augur_core::run::RUN_RECORD_VERSION;
use augur_core::RunRecord;
use augur_predict::{PredictorConfig, RuntimePredictor};
use proptest::prelude::*;

use crate::policy::{Policy, SchedulerConfig};
use crate::scheduler::{JobRequest, Scheduler, WorkerSpec};
use crate::sim::{parse_workers, simulate, SimOptions};

fn run(i: usize, user: &str, submit_s: i64, runtime_s: f64) -> RunRecord {
    RunRecord {
        v: RUN_RECORD_VERSION,
        job_id: format!("j{i}"),
        name: "class".into(),
        command: String::new(),
        user: user.into(),
        labels: BTreeMap::new(),
        priority: 0,
        requested_slots: 1,
        requested_cpu_millis: 0,
        requested_memory_bytes: 0,
        hints: BTreeMap::new(),
        requested_time_s: None,
        submitted_at_ms: submit_s * 1000,
        worker_id: String::new(),
        worker_speed: 1.0,
        queue_wait_ms: 0,
        runtime_ms: (runtime_s * 1000.0) as u64,
        outcome: "succeeded".into(),
        attempt: 1,
        finished_at_ms: submit_s * 1000 + (runtime_s * 1000.0) as i64,
        peak_memory_bytes: 0,
        cgroup_cpu_us: 0,
    }
}

fn request(record: RunRecord, slots: u32, constraints: BTreeMap<String, String>) -> JobRequest {
    let work = record.runtime_ms as f64 / 1000.0;
    JobRequest {
        features: record,
        slots,
        priority: 0,
        constraints,
        actual_work_s: Some(work),
    }
}

fn scheduler(policy: Policy) -> Scheduler<usize, String> {
    Scheduler::new(
        SchedulerConfig::with_policy(policy),
        RuntimePredictor::new(PredictorConfig::default()),
    )
}

fn worker(slots: u32, speed: f64, labels: &[(&str, &str)]) -> WorkerSpec {
    WorkerSpec {
        slots,
        speed,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        capacity: None,
    }
}

/// A mixed workload: users with short and long jobs, arriving in bursts.
fn workload(n: usize) -> Vec<RunRecord> {
    (0..n)
        .map(|i| {
            let user = ["ann", "bob", "cy"][i % 3];
            let runtime = match i % 3 {
                0 => 20.0 + (i % 7) as f64,
                1 => 600.0 + (i % 5) as f64 * 30.0,
                _ => 3000.0 + (i % 4) as f64 * 500.0,
            };
            run(i, user, (i as i64) * 40, runtime)
        })
        .collect()
}

#[test]
fn oracle_prefers_short_jobs_and_fast_workers() {
    let mut s = scheduler(Policy::Oracle);
    s.worker_up("slow".into(), worker(1, 1.0, &[]));
    s.worker_up("fast".into(), worker(1, 4.0, &[]));
    s.job_arrived(0, request(run(0, "a", 0, 1000.0), 1, BTreeMap::new()), 0);
    s.job_arrived(1, request(run(1, "a", 0, 10.0), 1, BTreeMap::new()), 0);
    s.job_arrived(2, request(run(2, "a", 0, 100.0), 1, BTreeMap::new()), 0);
    let decisions = s.next_assignments(0);
    let placed: Vec<(usize, &str)> = decisions
        .iter()
        .map(|d| (d.job, d.worker.as_str()))
        .collect();
    // Shortest first, onto the fastest free worker; the long job waits.
    assert_eq!(placed, vec![(1, "fast"), (2, "slow")]);
    assert_eq!(decisions[0].policy, Policy::Oracle);
    assert!(!decisions[0].candidates.is_empty());
    assert_eq!(s.queued(), 1);
    assert_eq!(s.running(), 2);
}

/// A run of job class `name` for user "a".
fn classed(i: usize, name: &str, submit_s: i64, runtime_s: f64) -> RunRecord {
    RunRecord {
        name: name.into(),
        ..run(i, "a", submit_s, runtime_s)
    }
}

// Regression (issue 12): the test named for predictive placement ran the
// oracle. Here the true runtimes say the opposite of the history, so only a
// policy that orders and places by the model's predictions passes.
#[test]
fn predictive_prefers_jobs_predicted_short_and_fast_workers() {
    // History: class "quick" runs ~10 s, class "slow" ~1000 s.
    let history: Vec<RunRecord> = (0..60)
        .map(|i| {
            let (name, runtime) = if i % 2 == 0 {
                ("quick", 10.0 + (i % 3) as f64)
            } else {
                ("slow", 1000.0 + (i % 5) as f64 * 10.0)
            };
            classed(i, name, i as i64 * 60, runtime)
        })
        .collect();
    let train = augur_predict::TrainConfig {
        min_records: 20,
        ..augur_predict::TrainConfig::default()
    };
    let model = augur_predict::train(&history, &train, 1, 0).expect("trains");
    let predictor = RuntimePredictor::with_model(
        Some(model),
        augur_predict::History::from_records(&history),
        PredictorConfig::default(),
    );
    let mut s: Scheduler<usize, String> =
        Scheduler::new(SchedulerConfig::with_policy(Policy::Predictive), predictor);
    s.worker_up("slow-worker".into(), worker(1, 1.0, &[]));
    s.worker_up("fast-worker".into(), worker(1, 4.0, &[]));
    let now_s = 60 * 60 + 2000;
    // Submitted first: a "slow" job that will in truth take 1 s; then a
    // "quick" one that will in truth take 5000 s.
    let mut slow_job = request(classed(100, "slow", now_s, 0.0), 1, BTreeMap::new());
    slow_job.actual_work_s = Some(1.0);
    let mut quick_job = request(classed(101, "quick", now_s, 0.0), 1, BTreeMap::new());
    quick_job.actual_work_s = Some(5000.0);
    s.job_arrived(0, slow_job, now_s * 1000);
    s.job_arrived(1, quick_job, now_s * 1000);
    let decisions = s.next_assignments(now_s * 1000);
    let placed: Vec<(usize, &str)> = decisions
        .iter()
        .map(|d| (d.job, d.worker.as_str()))
        .collect();
    // Predicted shortest first, onto the fastest free worker.
    assert_eq!(placed, vec![(1, "fast-worker"), (0, "slow-worker")]);
    for d in &decisions {
        assert_eq!(d.policy, Policy::Predictive);
        assert_eq!(d.fallback, None, "placed by the model, not least-loaded");
    }
    let predicted = |job: usize| s.prediction(&job).map(|p| p.seconds).expect("predicted");
    assert!(
        predicted(1) < 100.0 && predicted(0) > 100.0,
        "{} / {}",
        predicted(1),
        predicted(0)
    );
}

#[test]
fn running_jobs_that_overrun_are_corrected_upward() {
    let mut s = scheduler(Policy::Oracle);
    s.worker_up("w".into(), worker(1, 2.0, &[]));
    s.job_arrived(7, request(run(7, "a", 0, 100.0), 1, BTreeMap::new()), 0);
    assert_eq!(s.next_assignments(0).len(), 1);
    assert_eq!(s.expected_total_s(&7, 10_000), Some(50.0));
    // 80 s in, past the 50 s expected: now assumed to need twice the elapsed.
    assert_eq!(s.expected_total_s(&7, 80_000), Some(160.0));
}

#[test]
fn cold_start_places_least_loaded_and_says_so() {
    let mut s = scheduler(Policy::Predictive);
    s.worker_up("a".into(), worker(2, 1.0, &[]));
    s.worker_up("b".into(), worker(2, 8.0, &[]));
    s.job_arrived(1, request(run(1, "new", 0, 5.0), 1, BTreeMap::new()), 0);
    let decisions = s.next_assignments(0);
    assert_eq!(decisions.len(), 1);
    let fallback = decisions[0].fallback.as_deref().unwrap_or_default();
    assert!(fallback.contains("no trained model"), "{fallback}");
    assert!(fallback.contains("least-loaded"), "{fallback}");
}

#[test]
fn aging_prevents_starvation_under_a_stream_of_short_jobs() {
    // One worker, a long job, and a short job arriving every second forever:
    // pure shortest-first would never run the long job; aging must.
    let mut s = scheduler(Policy::Oracle);
    s.worker_up("w".into(), worker(1, 1.0, &[]));
    s.job_arrived(0, request(run(0, "a", 0, 50.0), 1, BTreeMap::new()), 0);
    s.job_arrived(1, request(run(1, "a", 0, 1.0), 1, BTreeMap::new()), 0);
    let mut running: Option<(usize, i64)> = None;
    let mut long_started = None;
    for t in 0..5_000i64 {
        let now = t * 1000;
        if let Some((job, until)) = running {
            if until <= now {
                s.job_finished(&job, None);
                running = None;
            }
        }
        s.job_arrived(
            1000 + t as usize,
            request(run(2, "a", t, 1.0), 1, BTreeMap::new()),
            now,
        );
        for d in s.next_assignments(now) {
            let work = if d.job == 0 { 50 } else { 1 };
            running = Some((d.job, now + work * 1000));
            if d.job == 0 {
                long_started = Some(t);
            }
        }
        if long_started.is_some() {
            break;
        }
    }
    // aging_rate 0.1: a 50 s job overtakes newer 1 s jobs after ~490 s.
    let started = long_started.expect("the long job must start");
    assert!(started < 1_000, "long job waited {started} s");
}

proptest! {
    /// Every assignment fits: enough free slots, every constraint matched,
    /// never more slots in use than a worker has, whatever the policy.
    #[test]
    fn assignments_are_always_feasible(
        workers in proptest::collection::vec((1u32..4, 1u32..4, any::<bool>()), 1..6),
        jobs in proptest::collection::vec((1u32..4, 0u32..3, 1u64..500, 0usize..3), 1..40),
        policy in proptest::sample::select(Policy::ALL.to_vec()),
        finish_every in 1usize..5,
    ) {
        let mut s = scheduler(policy);
        let mut capacity = BTreeMap::new();
        for (i, (slots, speed, gpu)) in workers.iter().enumerate() {
            let labels: &[(&str, &str)] = if *gpu { &[("gpu", "yes")] } else { &[] };
            s.worker_up(format!("w{i}"), worker(*slots, *speed as f64, labels));
            capacity.insert(format!("w{i}"), (*slots, *gpu));
        }
        let mut used: BTreeMap<String, u32> = BTreeMap::new();
        let mut running: Vec<(usize, String, u32)> = Vec::new();
        for (i, (slots, needs, runtime, user)) in jobs.iter().enumerate() {
            let constraints: BTreeMap<String, String> = if *needs == 0 {
                [("gpu".to_string(), "yes".to_string())].into()
            } else {
                BTreeMap::new()
            };
            let record = run(i, ["a", "b", "c"][*user], i as i64, *runtime as f64);
            s.job_arrived(i, request(record, *slots, constraints.clone()), i as i64 * 1000);
            for d in s.next_assignments(i as i64 * 1000) {
                let (cap, gpu) = capacity[&d.worker];
                let (job_slots, job_gpu) = (jobs[d.job].0, jobs[d.job].1 == 0);
                let in_use = used.entry(d.worker.clone()).or_default();
                *in_use += job_slots;
                prop_assert!(*in_use <= cap, "{} over capacity", d.worker);
                prop_assert!(!job_gpu || gpu, "constraint broken on {}", d.worker);
                running.push((d.job, d.worker.clone(), job_slots));
            }
            if i % finish_every == 0 && !running.is_empty() {
                let (job, w, slots) = running.remove(0);
                s.job_finished(&job, None);
                *used.entry(w).or_default() -= slots;
            }
        }
    }
}

#[test]
fn worker_specs_parse_and_refuse_garbage() {
    let groups = parse_workers("8x1, 4x2,4x4:3").expect("valid");
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[2].slots, 3);
    for bad in ["", "8", "0x1", "4x0", "4x-1", "axb", "4x1:0", "99999999x1"] {
        assert!(parse_workers(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn simulation_is_deterministic_and_causal() {
    let records = workload(300);
    let workers = parse_workers("2x1,1x2,1x4").expect("valid");
    let mut options = SimOptions::new(workers, Policy::Predictive);
    options.load = Some(0.8);
    options.retrain_every = 100;
    let first = simulate(&records, &options).expect("runs");
    let second = simulate(&records, &options).expect("runs");
    assert_eq!(first, second);
    assert!(first.trainings > 0);
    // No record from the future: at each arrival the history holds exactly the
    // jobs that had finished by then (in simulated time).
    for outcome in &first.outcomes {
        let finished = first
            .outcomes
            .iter()
            .filter(|o| o.finish_ms <= outcome.submit_ms)
            .count() as u64;
        assert_eq!(outcome.history_at_arrival, finished);
    }
}

#[test]
fn oracle_is_never_worse_than_least_loaded() {
    let records = workload(400);
    let workers = parse_workers("4x1,2x2,2x4").expect("valid");
    let mean = |policy| {
        let mut options = SimOptions::new(workers.clone(), policy);
        options.load = Some(0.9);
        simulate(&records, &options)
            .expect("runs")
            .quality
            .mean_jct_s
    };
    let (oracle, least) = (mean(Policy::Oracle), mean(Policy::LeastLoaded));
    assert!(oracle <= least, "oracle {oracle} vs least-loaded {least}");
}

#[test]
fn oracle_estimates_steer_the_oracle_but_jobs_run_their_true_runtimes() {
    let records = workload(300);
    let workers = parse_workers("2x1,1x4").expect("valid");
    let simulate_with = |estimates: Option<Vec<f64>>| {
        let mut options = SimOptions::new(workers.clone(), Policy::Oracle);
        options.load = Some(0.9);
        options.oracle_estimates = estimates;
        simulate(&records, &options)
    };
    let truth = simulate_with(None).expect("runs");
    let true_estimates = records
        .iter()
        .map(augur_predict::history::reference_runtime_s)
        .collect();
    assert_eq!(simulate_with(Some(true_estimates)).expect("runs"), truth);
    // Estimates that rank jobs backwards: same runtimes, worse order.
    let backwards: Vec<f64> = records
        .iter()
        .map(|r| 1e6 / augur_predict::history::reference_runtime_s(r))
        .collect();
    let inverted = simulate_with(Some(backwards)).expect("runs");
    for (a, b) in inverted.outcomes.iter().zip(&truth.outcomes) {
        let work = |o: &crate::sim::JobOutcome| o.runtime_s * [1.0, 1.0, 4.0][o.worker];
        assert!((work(a) - work(b)).abs() < 1e-6);
    }
    assert!(inverted.quality.mean_jct_s > truth.quality.mean_jct_s);
    // The estimates must cover every job.
    assert!(simulate_with(Some(vec![1.0; 3])).is_err());
    assert!(simulate_with(Some(vec![f64::NAN; records.len()])).is_err());
}

#[test]
fn tune_compares_aging_rates_and_recommends_the_best() {
    use crate::tune::{tune, TuneError, TuneOptions};
    let records = workload(300);
    let options = TuneOptions {
        workers: "2x1,1x4".into(),
        load: 0.9,
        policies: vec![Policy::LeastLoaded, Policy::Predictive],
        aging_rates: vec![0.5, 0.01, 0.1],
        ..Default::default()
    };
    let report = tune(&records, &options).expect("tune runs");
    let rows: Vec<(String, Option<f64>)> = report
        .placement
        .iter()
        .map(|q| (q.policy.clone(), q.aging_rate))
        .collect();
    // The configured 0.1 and the extra rates, once each, ascending.
    assert_eq!(
        rows,
        [
            ("least-loaded".to_string(), None),
            ("predictive".to_string(), Some(0.01)),
            ("predictive".to_string(), Some(0.1)),
            ("predictive".to_string(), Some(0.5)),
        ]
    );
    let best = report
        .placement
        .iter()
        .min_by(|a, b| a.mean_jct_s.total_cmp(&b.mean_jct_s))
        .expect("rows");
    assert_eq!(report.recommended.policy.name(), best.policy);
    if let Some(rate) = best.aging_rate {
        assert_eq!(report.recommended.config.aging_rate, rate);
    }
    let table = crate::render_table(&report);
    assert!(table.contains("predictive a=0.01"), "{table}");
    for bad in [
        vec![0.0],
        vec![-1.0],
        vec![f64::NAN],
        vec![1e9],
        vec![0.1; 9],
    ] {
        let options = TuneOptions {
            aging_rates: bad.clone(),
            ..options.clone()
        };
        assert!(
            matches!(tune(&records, &options), Err(TuneError::AgingRates(_))),
            "{bad:?}"
        );
    }
}

/// A new leader loads assignments before their worker registers again: the
/// worker's slots used to start at zero when it did, so it could be given
/// more than it offers.
#[test]
fn a_worker_registering_after_its_jobs_were_loaded_counts_them() {
    let mut s = scheduler(Policy::LeastLoaded);
    s.job_running(
        0,
        request(run(0, "a", 0, 10.0), 2, BTreeMap::new()),
        "w".into(),
        0,
    );
    s.worker_up("w".into(), worker(3, 1.0, &[]));
    assert_eq!(s.worker_slots(&"w".to_string()), Some((2, 3)));
    s.job_arrived(1, request(run(1, "a", 0, 10.0), 2, BTreeMap::new()), 0);
    assert!(
        s.next_assignments(0).is_empty(),
        "2 more slots do not fit in 1"
    );
    s.job_removed(&0);
    assert_eq!(s.next_assignments(0).len(), 1);
}

const GIB: u64 = 1 << 30;

proptest! {
    /// CPU and memory: the requests of the jobs running on a worker never add
    /// up to more than its capacity; a job no worker could ever hold is never
    /// placed and has a shortfall reason; every other job is placed once the
    /// workers are idle. Slots are ample here so only resources bind.
    #[test]
    fn requests_never_exceed_capacity_and_oversized_jobs_are_unschedulable(
        workers in proptest::collection::vec(
            proptest::option::weighted(0.8, (1u64..9, 1u64..17)), 1..5),
        jobs in proptest::collection::vec((0u64..10_000, 0u64..20, 1u64..100), 1..40),
        policy in proptest::sample::select(Policy::ALL.to_vec()),
        finish_every in 1usize..4,
    ) {
        use crate::resources::{shortfall, Request};
        let mut s = scheduler(policy);
        let mut capacities = BTreeMap::new();
        for (i, cap) in workers.iter().enumerate() {
            let capacity = cap.map(|(cores, gib)| augur_core::Capacity {
                cpu_millis: cores * 1000,
                memory_bytes: gib * GIB,
            });
            s.worker_up(format!("w{i}"), WorkerSpec { capacity, ..worker(100, 1.0, &[]) });
            capacities.insert(format!("w{i}"), capacity);
        }
        let requests: Vec<Request> = jobs
            .iter()
            .map(|(cpu, gib, _)| Request { cpu_millis: *cpu, memory_bytes: gib * GIB })
            .collect();
        let mut reserved: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut running: Vec<(usize, String)> = Vec::new();
        let mut placed = vec![false; jobs.len()];
        let check = |d: &crate::scheduler::Decision<usize, String>,
                         reserved: &mut BTreeMap<String, (u64, u64)>|
         -> Result<(), TestCaseError> {
            let r = requests[d.job];
            let entry = reserved.entry(d.worker.clone()).or_default();
            entry.0 += r.cpu_millis;
            entry.1 += r.memory_bytes;
            if let Some(cap) = capacities[&d.worker] {
                prop_assert!(entry.0 <= cap.cpu_millis, "{} CPU over capacity", d.worker);
                prop_assert!(entry.1 <= cap.memory_bytes, "{} memory over capacity", d.worker);
            }
            Ok(())
        };
        for (i, (cpu, gib, runtime)) in jobs.iter().enumerate() {
            let mut record = run(i, "a", i as i64, *runtime as f64);
            record.requested_cpu_millis = *cpu;
            record.requested_memory_bytes = gib * GIB;
            s.job_arrived(i, request(record, 1, BTreeMap::new()), i as i64 * 1000);
            for d in s.next_assignments(i as i64 * 1000) {
                check(&d, &mut reserved)?;
                placed[d.job] = true;
                running.push((d.job, d.worker.clone()));
            }
            if i % finish_every == 0 && !running.is_empty() {
                let (job, w) = running.remove(0);
                s.job_finished(&job, None);
                let r = requests[job];
                let entry = reserved.entry(w).or_default();
                entry.0 -= r.cpu_millis;
                entry.1 -= r.memory_bytes;
            }
        }
        // Drain: finish everything, one placement round at a time.
        let mut now = jobs.len() as i64 * 1000;
        loop {
            for (job, w) in running.drain(..) {
                s.job_finished(&job, None);
                let r = requests[job];
                let entry = reserved.entry(w).or_default();
                entry.0 -= r.cpu_millis;
                entry.1 -= r.memory_bytes;
            }
            now += 1000;
            let decisions = s.next_assignments(now);
            if decisions.is_empty() {
                break;
            }
            for d in decisions {
                check(&d, &mut reserved)?;
                placed[d.job] = true;
                running.push((d.job, d.worker.clone()));
            }
        }
        for (job, request) in requests.iter().enumerate() {
            let reason = shortfall(*request, capacities.values().map(Option::as_ref));
            prop_assert_eq!(placed[job], reason.is_none(), "job {} {:?}: {:?}", job, request, reason);
        }
    }
}

#[test]
fn shortfall_names_what_no_worker_has() {
    use crate::resources::{shortfall, Request};
    let caps = [
        augur_core::Capacity {
            cpu_millis: 2000,
            memory_bytes: 4 * GIB,
        },
        augur_core::Capacity {
            cpu_millis: 8000,
            memory_bytes: GIB,
        },
    ];
    let ask = |cpu, mem| {
        shortfall(
            Request {
                cpu_millis: cpu,
                memory_bytes: mem,
            },
            caps.iter().map(Some),
        )
    };
    assert_eq!(ask(1000, GIB), None);
    assert_eq!(
        ask(16_000, 0).as_deref(),
        Some("no worker has 16000m CPU (largest 8000m)")
    );
    assert_eq!(
        ask(0, 8 * GIB).as_deref(),
        Some("no worker has 8589934592 bytes of memory (largest 4294967296)")
    );
    assert_eq!(
        ask(4000, 2 * GIB).as_deref(),
        Some("no worker has 4000m CPU and 2147483648 bytes of memory on one worker")
    );
    // A worker of unknown capacity may hold anything.
    assert_eq!(
        shortfall(
            Request {
                cpu_millis: 1 << 40,
                memory_bytes: 0
            },
            [None].into_iter()
        ),
        None
    );
}
