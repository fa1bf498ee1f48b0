//! Crate-level tests: causality of features and training rows, model
//! training, (de)serialisation, cold start and the offline evaluation.

use augur_core::RunRecord;
use proptest::prelude::*;

use crate::features::{features, FeatureSchema};
use crate::history::History;
use crate::model::training_set;
use crate::testing::record;
use crate::*;

/// A workload where each (user, class) has its own typical runtime, with noise.
fn workload(n: i64) -> Vec<RunRecord> {
    (0..n)
        .map(|i| {
            let user = ["ann", "bob", "cy", "dee"][(i % 4) as usize];
            let class = ["short", "long", "mid"][((i / 4) % 3) as usize];
            let base = match class {
                "short" => 20.0,
                "mid" => 300.0,
                _ => 4000.0,
            };
            let user_factor = 1.0 + (i % 4) as f64 * 0.5;
            let noise = 1.0 + ((i * 7919) % 13) as f64 / 26.0;
            let mut r = record(i, user, class, base * user_factor * noise);
            r.requested_time_s = Some(base * 8.0);
            r
        })
        .collect()
}

#[test]
fn model_learns_and_round_trips() {
    let records = workload(600);
    let model = train(&records, &TrainConfig::default(), 7, 1234).expect("trains");
    assert_eq!(model.version, 7);
    assert!(model.metrics.within_2x > 0.9, "{:?}", model.metrics);
    let json = model.to_json().expect("serialises");
    assert!(json.len() < 200_000, "model JSON is {} bytes", json.len());
    let back = Model::from_json(&json).expect("parses");
    // serde_json parses floats to within an ulp, not always bit-exactly.
    assert_eq!(back.version, model.version);
    assert_eq!(back.feature_names, model.feature_names);
    for (a, b) in back.weights.iter().zip(&model.weights) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0));
    }

    let predictor = RuntimePredictor::with_model(
        Some(back),
        History::from_records(&records),
        PredictorConfig::default(),
    );
    let mut probe = record(10_000, "bob", "long", 0.0);
    probe.requested_time_s = Some(32_000.0);
    let p = predictor.predict(&probe);
    assert_eq!(p.source, Source::Model);
    assert_eq!(p.model_version, Some(7));
    assert!(p.seconds > 2000.0 && p.seconds < 15000.0, "{p:?}");
    assert!(p.p90_seconds >= p.seconds);
    assert!((p.seconds_on(4.0) - p.seconds / 4.0).abs() < 1e-9);
}

#[test]
fn stored_models_are_checked() {
    let model = train(&workload(200), &TrainConfig::default(), 1, 0).expect("trains");
    let mut value: serde_json::Value =
        serde_json::from_str(&model.to_json().expect("json")).expect("value");
    value["v"] = 99.into();
    assert!(matches!(
        Model::from_json(&value.to_string()),
        Err(PredictError::UnsupportedVersion { found: 99, .. })
    ));
    value["v"] = MODEL_FORMAT_VERSION.into();
    value["weights"] = serde_json::json!([1.0]);
    assert!(matches!(
        Model::from_json(&value.to_string()),
        Err(PredictError::Format(_))
    ));
    assert!(Model::from_json("{").is_err());
    assert!(matches!(
        train(&workload(3), &TrainConfig::default(), 1, 0),
        Err(PredictError::TooFewRecords { have: 3, .. })
    ));
}

#[test]
fn cold_start_says_so() {
    let records = workload(300);
    let model = train(&records, &TrainConfig::default(), 1, 0).expect("trains");
    let empty = RuntimePredictor::new(PredictorConfig::default());
    let p = empty.predict(&record(1, "ann", "short", 0.0));
    assert_eq!(p.source, Source::Fallback(FallbackReason::NoModel));
    let warm = RuntimePredictor::with_model(
        Some(model),
        History::from_records(&records),
        PredictorConfig::default(),
    );
    let stranger = record(1, "zed", "unheard-of", 0.0);
    assert!(matches!(
        warm.predict(&stranger).source,
        Source::Fallback(FallbackReason::ColdStart { runs: 0, .. })
    ));
}

#[test]
fn evaluation_scores_every_predictor() {
    let records = workload(800);
    let options = EvaluationOptions {
        retrain_every: 200,
        ..Default::default()
    };
    let eval = evaluate(&records, &options);
    let names: Vec<&str> = eval.quality.iter().map(|q| q.predictor.as_str()).collect();
    assert_eq!(
        names,
        [
            "model",
            "requested_time",
            "user_last2",
            "user_class_last2",
            "global_mean"
        ]
    );
    assert!(eval.trainings >= 3);
    let model = &eval.quality[0];
    let global = &eval.quality[4];
    assert!(model.within_2x > global.within_2x, "{:?}", eval.quality);
}

fn arbitrary_records() -> impl Strategy<Value = Vec<RunRecord>> {
    proptest::collection::vec(
        (0i64..500, 0i64..400, 0usize..3, 0usize..3, 0u64..5_000),
        1..60,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (submit_min, run_s, user, class, wait_ms))| {
                let mut r = record(
                    submit_min,
                    ["a", "b", "c"][user],
                    ["x", "y", "z"][class],
                    run_s as f64,
                );
                r.job_id = format!("r{i}");
                r.queue_wait_ms = wait_ms;
                r.finished_at_ms = r.submitted_at_ms + wait_ms as i64 + run_s * 1000;
                r
            })
            .collect()
    })
}

proptest! {
    /// No record from the future leaks into a prediction: the replay lets a
    /// job see exactly the runs finished by its submission.
    #[test]
    fn replay_is_causal(records in arbitrary_records()) {
        let mut finished = std::collections::BTreeSet::new();
        for event in causal_order(&records) {
            match event {
                ReplayEvent::Finish(i) => { finished.insert(i); }
                ReplayEvent::Submit(i) => {
                    let expected: std::collections::BTreeSet<usize> = (0..records.len())
                        .filter(|&j| informs(&records[j], records[i].submitted_at_ms))
                        .collect();
                    prop_assert_eq!(&finished, &expected);
                    prop_assert!(!finished.contains(&i));
                }
            }
        }
    }

    /// Training rows are the features a job had at submission: recomputing them
    /// from a history of only the runs finished by then gives the same vector.
    #[test]
    fn training_rows_use_only_the_past(records in arbitrary_records()) {
        let schema = FeatureSchema::default();
        let set = training_set(&records, &schema);
        let mut row = Vec::new();
        for (k, &i) in set.index.iter().enumerate() {
            let job = &records[i];
            let past = History::from_records(records.iter().filter(|r| {
                informs(r, job.submitted_at_ms) && r.job_id != job.job_id
            }));
            features(&past, &schema, job, &mut row);
            prop_assert_eq!(&row, &set.rows[k]);
        }
    }

    /// Changing what the future holds changes nothing about the past: scaling
    /// the runtimes of every run that ends after a job's submission (keeping
    /// the end times) leaves that job's training row identical.
    #[test]
    fn the_future_does_not_leak(records in arbitrary_records(), probe in 0usize..60) {
        let probe = probe % records.len();
        let cutoff = records[probe].submitted_at_ms;
        let mut changed = records.clone();
        for r in changed.iter_mut().filter(|r| r.finished_at_ms > cutoff) {
            r.runtime_ms = r.runtime_ms * 10 + 1;
        }
        let schema = FeatureSchema::default();
        let before = training_set(&records, &schema);
        let after = training_set(&changed, &schema);
        let k = before.index.iter().position(|&i| i == probe).expect("probe has a row");
        prop_assert_eq!(&before.rows[k], &after.rows[k]);
        let past = History::from_records(records.iter().filter(|r| r.finished_at_ms <= cutoff));
        let p = RuntimePredictor::with_model(None, past, PredictorConfig::default()).predict(&records[probe]);
        prop_assert!(p.seconds.is_finite() && p.seconds > 0.0);
    }
}

/// Found by `training_rows_use_only_the_past` in CI: a run that took no time
/// (finished at the instant it was submitted) was replayed as finishing before
/// its own submission, so its training row saw its own runtime.
#[test]
fn a_run_that_took_no_time_is_not_its_own_history() {
    let mut instant = record(0, "a", "x", 0.0);
    instant.finished_at_ms = instant.submitted_at_ms;
    let mut twin = instant.clone();
    twin.job_id = "twin".into();
    let mut later = record(0, "a", "x", 5.0);
    later.job_id = "later".into();
    let records = vec![instant.clone(), twin, later];
    let order = causal_order(&records);
    // Both instant runs are submitted before either finishes; the later-finishing
    // run is submitted at the same instant and sees neither.
    assert_eq!(
        order,
        [
            ReplayEvent::Submit(0),
            ReplayEvent::Submit(1),
            ReplayEvent::Submit(2),
            ReplayEvent::Finish(0),
            ReplayEvent::Finish(1),
            ReplayEvent::Finish(2),
        ]
    );
    let set = training_set(&records, &FeatureSchema::default());
    let mut alone = Vec::new();
    features(
        &History::new(),
        &FeatureSchema::default(),
        &instant,
        &mut alone,
    );
    assert_eq!(set.rows[0], alone, "no history at all for the first row");
    assert!(!informs(&instant, instant.submitted_at_ms));
    assert!(informs(&instant, instant.submitted_at_ms + 1));
    let mut ran = record(1, "a", "x", 5.0);
    ran.submitted_at_ms -= 5_000;
    assert!(informs(&ran, ran.finished_at_ms));
}

/// Bursts like `augur bench --compare-placement`'s: every job of a burst is
/// submitted before any has finished, classes interleaved, run on workers of
/// speeds 1, 2 and 4 in turn (recorded runtimes are divided by the speed).
fn demo_bursts(bursts: usize, per_class: usize) -> Vec<RunRecord> {
    let classes = [
        ("report-short", 0.2),
        ("etl-medium", 0.8),
        ("train-long", 2.0),
    ];
    let mut records = Vec::new();
    for b in 0..bursts {
        let start = b as i64 * 120_000;
        for i in 0..per_class * classes.len() {
            let (name, work) = classes[(i + b) % classes.len()];
            let speed = [1.0, 2.0, 4.0][i % 3];
            let n = records.len() as i64;
            let mut r = record(n, "demo", name, work / speed);
            r.command = "sh".into();
            r.worker_speed = speed;
            r.submitted_at_ms = start + i as i64 * 20;
            r.finished_at_ms = start + 30_000 + i as i64 * 100;
            records.push(r);
        }
    }
    records
}

// Regression: a model trained only on bursts (no job had finished when any was
// submitted; with two bursts the ridge's gate is fitted but the templates' are
// not) must still tell the demo's classes apart once history exists.
#[test]
fn model_trained_on_bursts_separates_classes() {
    for bursts in [1, 2] {
        check_bursts_separate_classes(demo_bursts(bursts, 14));
    }
}

fn check_bursts_separate_classes(records: Vec<RunRecord>) {
    let config = TrainConfig {
        min_records: 20,
        ..TrainConfig::default()
    };
    let model = train(&records, &config, 1, 0).expect("trains");
    let predictor = RuntimePredictor::with_model(
        Some(model),
        History::from_records(&records),
        PredictorConfig::default(),
    );
    let mut seen = Vec::new();
    for (name, work) in [
        ("report-short", 0.2),
        ("etl-medium", 0.8),
        ("train-long", 2.0),
    ] {
        let mut probe = record(1_000, "demo", name, 0.0);
        probe.command = "sh".into();
        probe.submitted_at_ms = 10_000_000;
        let p = predictor.predict(&probe);
        assert_eq!(p.source, Source::Model, "{name}: {p:?}");
        let error = (p.seconds / work).log2().abs();
        assert!(
            error < 0.5,
            "{name} after {} runs: predicted {p:?}, true {work}",
            records.len()
        );
        seen.push(p.seconds);
    }
    assert!(seen[0] < seen[1] && seen[1] < seen[2], "{seen:?}");
}
