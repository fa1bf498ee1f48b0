//! `cargo bench -p augur-benches --bench model`: criterion timings of the
//! runtime model and the placement engine (figures printed, never asserted):
//!
//! * `inference/predict_job`: one prediction with a model trained on the KTH
//!   trace and the full KTH history (goal: under 50 µs per (job, worker) pair;
//!   a job is predicted once and each worker then costs one division, so a
//!   pair costs at most this);
//! * `inference/score_16_workers`: a prediction plus its runtime on 16 workers
//!   of different speeds (what one placement decision computes);
//! * `training/100k_records`: training on 100 000 records on one thread
//!   (goal: under 10 s);
//! * `placement/finish_and_place`: the scheduler frees one slot and places the
//!   next job, 100 workers × 4 slots and a queue of up to 3000 jobs.

use std::hint::black_box;
use std::time::Duration;

use augur_benches::{kth, nasa, repeated};
use augur_core::RunRecord;
use augur_placement::{JobRequest, Policy, Scheduler, SchedulerConfig, WorkerSpec};
use augur_predict::{History, PredictorConfig, RuntimePredictor, TrainConfig};
use criterion::{criterion_group, criterion_main, Criterion};

fn trained_predictor(records: &[RunRecord]) -> RuntimePredictor {
    let model = match augur_predict::train(records, &TrainConfig::default(), 1, 0) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("training failed: {e}");
            std::process::exit(1);
        }
    };
    RuntimePredictor::with_model(
        Some(model),
        History::from_records(records),
        PredictorConfig::default(),
    )
}

fn inference(c: &mut Criterion) {
    let kth = kth();
    let predictor = trained_predictor(&kth);
    let probes: Vec<&RunRecord> = kth.iter().step_by(7).collect();
    let speeds: Vec<f64> = (0..16).map(|i| [1.0, 2.0, 4.0][i % 3]).collect();
    let mut group = c.benchmark_group("inference");
    let mut next = 0usize;
    group.bench_function("predict_job", |b| {
        b.iter(|| {
            next = (next + 1) % probes.len();
            black_box(predictor.predict(black_box(probes[next])))
        })
    });
    group.bench_function("score_16_workers", |b| {
        b.iter(|| {
            next = (next + 1) % probes.len();
            let prediction = predictor.predict(black_box(probes[next]));
            speeds
                .iter()
                .map(|s| prediction.seconds_on(*s))
                .fold(f64::INFINITY, f64::min)
        })
    });
    group.finish();
}

fn training(c: &mut Criterion) {
    let (kth, nasa) = (kth(), nasa());
    let big = repeated(&[&kth, &nasa], 100_000);
    let mut group = c.benchmark_group("training");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(60));
    group.bench_function("100k_records", |b| {
        b.iter(|| augur_predict::train(black_box(&big), &TrainConfig::default(), 1, 0))
    });
    group.finish();
}

fn request(job: &RunRecord) -> JobRequest {
    JobRequest {
        features: job.clone(),
        slots: 1,
        priority: 0,
        constraints: Default::default(),
        actual_work_s: None,
    }
}

fn placement(c: &mut Criterion) {
    let kth = kth();
    let predictor = trained_predictor(&kth);
    let mut scheduler: Scheduler<usize, usize> =
        Scheduler::new(SchedulerConfig::with_policy(Policy::Predictive), predictor);
    for w in 0..100 {
        scheduler.worker_up(
            w,
            WorkerSpec {
                slots: 4,
                speed: [1.0, 2.0, 4.0][w % 3],
                labels: Default::default(),
                capacity: None,
            },
        );
    }
    let mut now = 0i64;
    let mut next_job = 0usize;
    let mut refill = |scheduler: &mut Scheduler<usize, usize>, now: i64| {
        while scheduler.queued() < 3000 {
            scheduler.job_arrived(next_job, request(&kth[next_job % kth.len()]), now);
            next_job += 1;
        }
    };
    // Fill every slot, so each iteration frees one and places one.
    refill(&mut scheduler, now);
    let mut running: std::collections::VecDeque<usize> = scheduler
        .next_assignments(now)
        .into_iter()
        .map(|d| d.job)
        .collect();
    let mut group = c.benchmark_group("placement");
    group.bench_function("finish_and_place", |b| {
        b.iter(|| {
            now += 1;
            if let Some(done) = running.pop_front() {
                scheduler.job_finished(&done, None);
            }
            if scheduler.queued() == 0 {
                refill(&mut scheduler, now);
            }
            for d in scheduler.next_assignments(now) {
                running.push_back(d.job);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, inference, training, placement);
criterion_main!(benches);
