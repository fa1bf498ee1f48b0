//! `cargo bench -p augur-benches --bench predict`: runtime prediction and
//! placement figures. Prints, never asserts:
//!
//! * inference: microseconds per (job, worker) prediction with a model trained
//!   on the KTH trace (goal: < 50 µs);
//! * training: seconds to train on 100k records on one core (goal: < 10 s);
//! * scheduler: microseconds per placement decision with 100 workers and a
//!   queue of 3000 jobs (the live leader's peak rate is ~3000 jobs/s);
//! * `tune` on both shipped traces with `--workers 8x1,4x2,4x4 --load 0.8`:
//!   model vs best baseline, predictive vs oracle and least-loaded.

use std::path::PathBuf;
use std::time::Instant;

use augur_core::RunRecord;
use augur_placement::import::read_swf;
use augur_placement::{
    tune, JobRequest, Policy, Scheduler, SchedulerConfig, TuneOptions, WorkerSpec,
};
use augur_predict::{History, PredictorConfig, RuntimePredictor, TrainConfig};

fn trace(name: &str) -> Vec<RunRecord> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/traces")
        .join(name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    };
    match read_swf(file) {
        Ok(t) => t.records,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

/// 100k records: the two traces, repeated with renamed users and shifted times.
fn hundred_thousand(kth: &[RunRecord], nasa: &[RunRecord]) -> Vec<RunRecord> {
    let mut out = Vec::with_capacity(100_000);
    let mut round = 0i64;
    while out.len() < 100_000 {
        for r in kth.iter().chain(nasa) {
            if out.len() == 100_000 {
                break;
            }
            let mut r = r.clone();
            r.user = format!("{}-{round}", r.user);
            let shift = round * 400 * 24 * 3600 * 1000;
            r.submitted_at_ms += shift;
            r.finished_at_ms += shift;
            out.push(r);
        }
        round += 1;
    }
    out
}

fn main() {
    let kth = trace("KTH-SP2-1996-2.swf.gz");
    let nasa = trace("NASA-iPSC-1993-3.1-cln.swf.gz");

    // Training on 100k records, one core.
    let big = hundred_thousand(&kth, &nasa);
    let started = Instant::now();
    let model = match augur_predict::train(&big, &TrainConfig::default(), 1, 0) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("training failed: {e}");
            std::process::exit(1);
        }
    };
    let train_s = started.elapsed().as_secs_f64();
    let json = model.to_json().unwrap_or_default();
    println!(
        "training: {} records in {train_s:.2} s (goal < 10 s); model JSON {} bytes",
        big.len(),
        json.len()
    );

    // Inference per (job, worker) pair.
    let predictor = RuntimePredictor::with_model(
        Some(model),
        History::from_records(&kth),
        PredictorConfig::default(),
    );
    let probes: Vec<&RunRecord> = kth.iter().step_by(7).take(4000).collect();
    let speeds = [1.0, 2.0, 4.0];
    let rounds = 5;
    let started = Instant::now();
    let mut sink = 0.0;
    for _ in 0..rounds {
        for job in &probes {
            let prediction = predictor.predict(job);
            for speed in speeds {
                sink += prediction.seconds_on(speed);
            }
        }
    }
    let pairs = (rounds * probes.len() * speeds.len()) as f64;
    let per_job_us = started.elapsed().as_secs_f64() * 1e6 / (rounds * probes.len()) as f64;
    println!(
        "inference: {per_job_us:.1} µs per job prediction, {:.1} µs per (job, worker) pair over {} workers (goal < 50 µs) [{sink:.0}]",
        started.elapsed().as_secs_f64() * 1e6 / pairs,
        speeds.len()
    );

    // Placement decisions: 100 workers × 4 slots, 3000 queued jobs.
    let mut scheduler: Scheduler<usize, usize> = Scheduler::new(
        SchedulerConfig::with_policy(Policy::Predictive),
        predictor.clone(),
    );
    for w in 0..100 {
        scheduler.worker_up(
            w,
            WorkerSpec {
                slots: 4,
                speed: [1.0, 2.0, 4.0][w % 3],
                labels: Default::default(),
            },
        );
    }
    let started = Instant::now();
    for (i, job) in kth.iter().take(3000).enumerate() {
        scheduler.job_arrived(
            i,
            JobRequest {
                features: job.clone(),
                slots: 1,
                priority: 0,
                constraints: Default::default(),
                actual_work_s: None,
            },
            i as i64,
        );
    }
    let arrive_us = started.elapsed().as_secs_f64() * 1e6 / 3000.0;
    let started = Instant::now();
    let mut placed = 0usize;
    let mut t = 3000i64;
    while scheduler.queued() > 0 {
        let decisions = scheduler.next_assignments(t);
        placed += decisions.len();
        for d in decisions {
            scheduler.job_finished(&d.job, None);
        }
        t += 1;
    }
    println!(
        "scheduler: {arrive_us:.1} µs per arrival (prediction + enqueue), {:.1} µs per placement decision (100 workers, queue of 3000)",
        started.elapsed().as_secs_f64() * 1e6 / placed.max(1) as f64
    );

    // The goals of the placement issue, on the full traces.
    for (name, records) in [("KTH", &kth), ("NASA", &nasa)] {
        let started = Instant::now();
        let report = match tune(records, &TuneOptions::default()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{name}: tune failed: {e}");
                continue;
            }
        };
        let model = report.prediction.iter().find(|q| q.predictor == "model");
        let best_baseline = report
            .prediction
            .iter()
            .filter(|q| q.predictor != "model")
            .max_by(|a, b| a.within_2x.total_cmp(&b.within_2x));
        let jct = |p: &str| {
            report
                .placement
                .iter()
                .find(|q| q.policy == p)
                .map(|q| q.mean_jct_s)
                .unwrap_or(f64::NAN)
        };
        if let (Some(m), Some(b)) = (model, best_baseline) {
            println!(
                "{name}: model {:.1}% within 2x, median |log2| {:.3}; best baseline {} {:.1}%, {:.3} (goal: model beats every baseline on both, 65%+)",
                m.within_2x * 100.0,
                m.median_abs_log2,
                b.predictor,
                b.within_2x * 100.0,
                b.median_abs_log2
            );
        }
        println!(
            "{name}: predictive mean JCT {:.0} s = {:.2}x oracle (goal <= 1.15x), {:.2}x least-loaded (goal <= 0.5x) [{:.1} s]",
            jct("predictive"),
            jct("predictive") / jct("oracle"),
            jct("predictive") / jct("least-loaded"),
            started.elapsed().as_secs_f64()
        );
    }
}
