//! `augur bench --compare-placement`: the same workload under `least-loaded`
//! and under `predictive` on one live cluster of workers with different
//! (simulated) speeds, after a warm-up that lets the leader train its model.
//!
//! The workload is a burst of jobs of the demo's classes (a few tenths of a
//! second to several seconds on a speed-1 worker, each job ±15 % around its
//! class), interleaved in a fixed shuffled order and submitted at once, so a
//! queue several times longer than the slots forms and both the order and the
//! worker choice matter. Both policies get exactly the same burst. Prints mean
//! job completion time (submission to finish) overall and per class, their
//! ratio, and how well the live model predicted the measured burst; asserts
//! nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use augur_core::RunRecord;
use augur_placement::predict::{History, Model, PredictorConfig, RuntimePredictor, Source};
use augur_proto::v1 as pb;
use serde_json::json;

use crate::demo::{job, CLASSES};

/// One job of a burst: its class and its duration on a speed-1 worker.
#[derive(Clone, Copy, Debug)]
struct BenchJob {
    class: &'static str,
    seconds: f64,
}

/// `per_class` jobs of every class, each within ±15 % of its class's duration,
/// in a shuffled order fixed by `seed` (a tiny LCG: no randomness between runs).
fn workload(per_class: usize, seed: u64) -> Vec<BenchJob> {
    let mut jobs = Vec::new();
    for i in 0..per_class {
        for (k, (class, seconds)) in CLASSES.iter().enumerate() {
            let jitter = 0.85 + 0.3 * (((i * 7 + k * 13) % 11) as f64 / 10.0);
            jobs.push(BenchJob {
                class,
                seconds: seconds * jitter,
            });
        }
    }
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for i in (1..jobs.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        jobs.swap(i, j);
    }
    jobs
}

/// What one burst measured.
struct BurstResult {
    mean_jct_s: f64,
    by_class: BTreeMap<&'static str, f64>,
    ids: HashSet<String>,
}

/// Submits `jobs` back to back and waits until all have ended.
async fn burst(endpoint: &str, jobs: &[BenchJob]) -> anyhow::Result<BurstResult> {
    let mut client = crate::client::connect(endpoint).await?;
    let mut ids = Vec::new();
    for j in jobs {
        let id = client
            .submit_job(job(j.class, j.seconds))
            .await?
            .into_inner()
            .job_id;
        ids.push((id, j.class));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    let mut total = 0.0;
    let mut by_class: BTreeMap<&'static str, (f64, usize)> = BTreeMap::new();
    for (id, class) in &ids {
        loop {
            let j = client
                .get_job(pb::GetJobRequest { job_id: id.clone() })
                .await?
                .into_inner();
            if crate::render::is_terminal(j.state) {
                let jct = (j.finished_at_ms - j.submitted_at_ms) as f64 / 1000.0;
                total += jct;
                let entry = by_class.entry(class).or_default();
                entry.0 += jct;
                entry.1 += 1;
                break;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("job {id} did not finish within 15 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(BurstResult {
        mean_jct_s: total / ids.len().max(1) as f64,
        by_class: by_class
            .into_iter()
            .map(|(class, (sum, n))| (class, sum / n.max(1) as f64))
            .collect(),
        ids: ids.into_iter().map(|(id, _)| id).collect(),
    })
}

async fn set_policy(endpoint: &str, policy: &str) -> anyhow::Result<()> {
    let mut placement = crate::connection::placement(endpoint).await?;
    placement
        .set_placement_config(pb::SetPlacementConfigRequest {
            json: json!({ "policy": policy }).to_string(),
            expected_revision: None,
        })
        .await?;
    // The leader follows the stored configuration through a watch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// The current model, waiting up to a minute for the first one.
async fn model(endpoint: &str) -> anyhow::Result<Model> {
    let mut placement = crate::connection::placement(endpoint).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match placement
            .get_model(pb::GetModelRequest {
                include_model: true,
            })
            .await
        {
            Ok(m) => {
                return Model::from_json(&m.into_inner().model_json)
                    .map_err(|e| anyhow::anyhow!("the stored model is unreadable: {e}"))
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            Err(e) => anyhow::bail!("no model was trained after the warm-up: {}", e.message()),
        }
    }
}

async fn export_runs(endpoint: &str) -> anyhow::Result<Vec<RunRecord>> {
    let mut placement = crate::connection::placement(endpoint).await?;
    let mut stream = placement
        .export_runs(pb::ExportRunsRequest {
            since_ms: 0,
            limit: 0,
        })
        .await?
        .into_inner();
    let mut runs = Vec::new();
    while let Some(record) = stream.message().await? {
        runs.push(serde_json::from_str(&record.json)?);
    }
    Ok(runs)
}

/// How well `model` predicted the runs of `measured`, as the leader would
/// have: each job predicted from the runs that had finished when it was
/// submitted. Returns (median |log2(predicted/actual)|, share from the model
/// rather than a cold-start fallback, jobs).
fn live_error(model: Model, runs: &[RunRecord], measured: &HashSet<String>) -> (f64, f64, usize) {
    let mut finished: Vec<&RunRecord> = runs.iter().collect();
    finished.sort_by_key(|r| r.finished_at_ms);
    let mut targets: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| measured.contains(&r.job_id))
        .collect();
    targets.sort_by_key(|r| r.submitted_at_ms);
    let mut predictor =
        RuntimePredictor::with_model(Some(model), History::new(), PredictorConfig::default());
    let mut next = 0;
    let mut errors = Vec::new();
    let mut from_model = 0usize;
    for run in &targets {
        while next < finished.len() && finished[next].finished_at_ms <= run.submitted_at_ms {
            predictor.observe(finished[next]);
            next += 1;
        }
        let p = predictor.predict(run);
        if p.source == Source::Model {
            from_model += 1;
        }
        let actual = run.reference_runtime_s().max(1e-3);
        errors.push((p.seconds / actual).log2().abs());
    }
    errors.sort_by(f64::total_cmp);
    let median = errors.get(errors.len() / 2).copied().unwrap_or(f64::NAN);
    let n = targets.len();
    (median, from_model as f64 / n.max(1) as f64, n)
}

/// The same burst under `least-loaded`, then `predictive` (left in force),
/// with the live model's error on the predictive burst.
pub(crate) struct Comparison {
    least_loaded: BurstResult,
    predictive: BurstResult,
    jobs: usize,
    model_version: u64,
    /// Median |log2(predicted/actual)| on the predictive burst.
    pub median_abs_log2: f64,
    /// Share of the predictive burst's predictions that came from the model.
    pub from_model: f64,
}

impl Comparison {
    pub fn least_loaded_mean_jct_s(&self) -> f64 {
        self.least_loaded.mean_jct_s
    }

    pub fn predictive_mean_jct_s(&self) -> f64 {
        self.predictive.mean_jct_s
    }

    pub fn ratio(&self) -> f64 {
        self.predictive.mean_jct_s / self.least_loaded.mean_jct_s.max(1e-9)
    }
}

/// Runs one measured burst of `per_class` jobs per class under each policy on
/// a cluster whose leader has a model already.
pub(crate) async fn measure(endpoint: &str, per_class: usize) -> anyhow::Result<Comparison> {
    let measured = workload(per_class, 1);
    set_policy(endpoint, "least-loaded").await?;
    let least_loaded = burst(endpoint, &measured).await?;
    set_policy(endpoint, "predictive").await?;
    // The model the leader places the measured burst with (it may retrain
    // during the burst; the error reported is this version's).
    let live_model = model(endpoint).await?;
    let model_version = live_model.version;
    let predictive = burst(endpoint, &measured).await?;
    let (median_abs_log2, from_model, _) =
        live_error(live_model, &export_runs(endpoint).await?, &predictive.ids);
    Ok(Comparison {
        least_loaded,
        predictive,
        jobs: measured.len(),
        model_version,
        median_abs_log2,
        from_model,
    })
}

/// Runs the comparison after a warm-up burst; returns a JSON report.
pub async fn compare(endpoint: &str, per_class: usize) -> anyhow::Result<serde_json::Value> {
    // Warm-up: history and a trained model (a different order than measured).
    burst(endpoint, &workload(per_class, 0)).await?;
    let warm_version = model(endpoint).await?.version;
    let c = measure(endpoint, per_class).await?;
    let by_class: serde_json::Map<String, serde_json::Value> = CLASSES
        .iter()
        .map(|(class, seconds)| {
            (
                class.to_string(),
                json!({
                    "speed1_seconds": seconds,
                    "least_loaded_mean_jct_s": c.least_loaded.by_class.get(class),
                    "predictive_mean_jct_s": c.predictive.by_class.get(class),
                }),
            )
        })
        .collect();
    // A readable summary on stderr; stdout keeps the JSON alone.
    eprintln!(
        "least-loaded mean JCT {:.2} s, predictive {:.2} s: {:.2}x; live model median |log2(predicted/actual)| {:.2}, {:.0} % of predictions from the model",
        c.least_loaded_mean_jct_s(),
        c.predictive_mean_jct_s(),
        c.ratio(),
        c.median_abs_log2,
        c.from_model * 100.0
    );
    for (class, _) in CLASSES {
        if let (Some(ll), Some(pr)) = (
            c.least_loaded.by_class.get(class),
            c.predictive.by_class.get(class),
        ) {
            eprintln!("  {class:<14} {ll:>6.2} s -> {pr:>6.2} s");
        }
    }
    Ok(json!({
        "jobs_per_burst": c.jobs,
        "model_version_after_warmup": warm_version,
        "model_version_measured": c.model_version,
        "least_loaded_mean_jct_s": c.least_loaded_mean_jct_s(),
        "predictive_mean_jct_s": c.predictive_mean_jct_s(),
        "predictive_over_least_loaded": c.ratio(),
        "by_class": by_class,
        "prediction": {
            "jobs": c.predictive.ids.len(),
            "median_abs_log2": c.median_abs_log2,
            "from_model": c.from_model,
        },
    }))
}
