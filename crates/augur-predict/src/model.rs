//! The trained model: a ridge regression of ln(runtime) on the causal features
//! and a gate that picks the most trustworthy candidate estimate
//! ([`crate::experts`]), both fitted with linfa, plus residual quantiles per job
//! class for uncertainty.
//!
//! Training ([`train`]) is a plain synchronous function (call it from
//! `spawn_blocking`): it replays the records causally (a record joins the
//! history only once it has finished, before the next submission), computes
//! each record's features as they were at its submission, fits the ridge, then
//! replays again to fit the gate on the candidates each record had. The result
//! serialises to compact JSON ([`Model::to_json`]) with a format version, a few
//! tens of kilobytes: small enough for one etcd value.

use std::collections::HashMap;

use augur_core::RunRecord;
use linfa::traits::Fit;
use linfa::Dataset;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::experts::{candidate_names, candidates, select_ln, CANDIDATE_KINDS, GATE_FEATURES};
use crate::features::{features, Coverage, FeatureSchema};
use crate::history::{reference_runtime_s, History, MIN_RUNTIME_S};
use crate::metrics::{median, quantile};
use crate::replay::{causal_order, ReplayEvent};
use crate::PredictError;

/// What [`Model::algorithm`] says.
const ALGORITHM: &str =
    "gate over template experts + ridge(ln runtime), linfa-linear least squares";

/// Fewest training records for fitted gates; below, every candidate kind is
/// scored by its prior gate (its own recent hit rate). A gate fitted on a
/// few bursts trusts the ridge, which then extrapolates from history features
/// it never saw filled (regression test: `model_trained_on_bursts_separates_classes`).
const MIN_FITTED_GATE_RECORDS: usize = 500;

/// Most rows per candidate kind used to fit the gate.
const MAX_GATE_ROWS: usize = 40_000;

/// ln of ten years in seconds: the largest runtime the ridge may propose.
const MAX_RIDGE_LN: f64 = 19.57;

/// Format version of serialised models.
pub const MODEL_FORMAT_VERSION: u32 = 3;

/// Residual groups kept in a model, most frequent first (bounds its size).
const MAX_RESIDUAL_GROUPS: usize = 2000;
/// Fewest residuals for a group of its own; smaller groups use the global row.
const MIN_GROUP_RESIDUALS: usize = 20;

/// Training settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Ridge penalty on standardised features, per record.
    pub ridge_lambda: f64,
    /// Fewest records to train on.
    pub min_records: usize,
    /// Most submitter hints used as features.
    pub max_hints: usize,
    /// Share of records that must carry a hint for it to be used.
    pub min_hint_share: f64,
    /// Re-weighting rounds with Huber weights (0 = plain least squares); makes
    /// the fit follow the bulk of jobs rather than a few extreme ones.
    pub robust_rounds: u32,
    /// Huber threshold, in ln units.
    pub huber_delta: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            ridge_lambda: 0.01,
            min_records: 50,
            max_hints: 8,
            min_hint_share: 0.05,
            robust_rounds: 2,
            huber_delta: 1.0,
        }
    }
}

/// Spread of ln(actual / predicted) for one group of jobs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Residual {
    pub count: u64,
    /// Robust standard deviation (1.4826 × median absolute deviation).
    pub log_sigma: f64,
    /// 90th percentile of ln(actual / predicted).
    pub q90: f64,
}

/// Residuals per job class (or user when the class is unknown) and overall.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Residuals {
    pub global: Option<Residual>,
    pub by_group: HashMap<u64, Residual>,
}

impl Residuals {
    /// The residual row for `job`: its group's if known, else the global one.
    pub fn for_job(&self, job: &RunRecord) -> Option<Residual> {
        group_key(job)
            .and_then(|k| self.by_group.get(&k).copied())
            .or(self.global)
    }
}

/// The residual group of a job: its class, or its user if it has no class.
fn group_key(job: &RunRecord) -> Option<u64> {
    use crate::history::Template;
    Template::Class.key(job).or_else(|| Template::User.key(job))
}

/// How the model fared on its own training records (in-sample).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetrics {
    pub records: u64,
    pub within_2x: f64,
    pub median_abs_log2: f64,
}

/// A trained runtime model, as stored in etcd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Format version ([`MODEL_FORMAT_VERSION`]).
    pub v: u32,
    /// Monotonic model version chosen by the trainer.
    pub version: u64,
    pub trained_at_ms: i64,
    /// Algorithm name, for reports.
    pub algorithm: String,
    pub schema: FeatureSchema,
    pub feature_names: Vec<String>,
    /// Ridge weights on the raw (unstandardised) features.
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// Names of the candidate kinds the gate chooses among.
    pub candidates: Vec<String>,
    /// Gate weights per candidate kind (over [`GATE_FEATURES`] features).
    pub gate: Vec<Vec<f64>>,
    pub residuals: Residuals,
    pub metrics: TrainingMetrics,
}

impl Model {
    /// The ridge's ln(runtime on a speed-1 worker) for a feature vector.
    /// Clamped to 10 ms … 10 years: a feature far outside what the ridge was
    /// trained on (a history statistic that was always empty in training)
    /// must not extrapolate to an infinite runtime.
    pub fn ridge_ln(&self, features: &[f64]) -> f64 {
        let dot: f64 = self.weights.iter().zip(features).map(|(w, x)| w * x).sum();
        let ln = self.intercept + dot;
        if ln.is_nan() {
            return crate::features::PRIOR_LN_RUNTIME;
        }
        ln.clamp(MIN_RUNTIME_S.ln(), MAX_RIDGE_LN)
    }

    /// The model's ln(runtime on a speed-1 worker) for `job` given the
    /// history now, the index of the candidate it chose (into
    /// [`Model::candidates`]) and the history behind the job. `scratch` is
    /// reused between calls to avoid allocating.
    pub fn predict_ln(
        &self,
        history: &History,
        job: &RunRecord,
        scratch: &mut Scratch,
    ) -> (f64, usize, Coverage) {
        let coverage = features(history, &self.schema, job, &mut scratch.row);
        let ridge = self.ridge_ln(&scratch.row);
        candidates(history, job, ridge, &mut scratch.candidates);
        let (ln, kind) =
            select_ln(&self.gate, &scratch.candidates).unwrap_or((ridge, crate::experts::RIDGE));
        (clamp_to_request(ln, job), kind, coverage)
    }

    pub fn to_json(&self) -> Result<String, PredictError> {
        serde_json::to_string(self).map_err(|e| PredictError::Format(e.to_string()))
    }

    /// Parses a stored model, refusing other format versions and models whose
    /// shape does not match their schema.
    pub fn from_json(text: &str) -> Result<Model, PredictError> {
        let model: Model =
            serde_json::from_str(text).map_err(|e| PredictError::Format(e.to_string()))?;
        if model.v != MODEL_FORMAT_VERSION {
            return Err(PredictError::UnsupportedVersion {
                found: model.v,
                supported: MODEL_FORMAT_VERSION,
            });
        }
        if model.weights.len() != model.schema.len()
            || !model.weights.iter().all(|w| w.is_finite())
            || !model.intercept.is_finite()
            || model.gate.len() != CANDIDATE_KINDS
            || model
                .gate
                .iter()
                .any(|w| w.len() != GATE_FEATURES || !w.iter().all(|v| v.is_finite()))
        {
            return Err(PredictError::Format(format!(
                "model has {} weights for {} features, or non-finite values",
                model.weights.len(),
                model.schema.len()
            )));
        }
        Ok(model)
    }
}

/// Buffers reused across predictions.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    row: Vec<f64>,
    candidates: Vec<crate::experts::Candidate>,
}

/// Feature rows of `records` as they were at each record's submission.
pub struct TrainingSet {
    pub rows: Vec<Vec<f64>>,
    /// ln(runtime on a speed-1 worker).
    pub targets: Vec<f64>,
    /// Index into the input slice of each row.
    pub index: Vec<usize>,
}

/// Replays `records` causally ([`causal_order`]) and calls `at_submit` with each
/// record's index and the history as it was at the record's submission: exactly
/// the records finished by then have been observed. Returns the final history.
pub fn replay_submissions(
    records: &[RunRecord],
    mut at_submit: impl FnMut(usize, &History),
) -> History {
    let mut history = History::new();
    for event in causal_order(records) {
        match event {
            ReplayEvent::Finish(i) => history.observe(&records[i]),
            ReplayEvent::Submit(i) => at_submit(i, &history),
        }
    }
    history
}

/// Every record's ridge features at its submission, in submit order.
pub fn training_set(records: &[RunRecord], schema: &FeatureSchema) -> TrainingSet {
    let mut set = TrainingSet {
        rows: Vec::with_capacity(records.len()),
        targets: Vec::with_capacity(records.len()),
        index: Vec::with_capacity(records.len()),
    };
    let mut row = Vec::with_capacity(schema.len());
    replay_submissions(records, |i, history| {
        features(history, schema, &records[i], &mut row);
        set.rows.push(row.clone());
        set.targets.push(reference_runtime_s(&records[i]).ln());
        set.index.push(i);
    });
    set
}

/// Trains a model on finished runs. Synchronous and CPU-bound: run it off the
/// async runtime (`spawn_blocking`).
pub fn train(
    records: &[RunRecord],
    config: &TrainConfig,
    version: u64,
    trained_at_ms: i64,
) -> Result<Model, PredictError> {
    if records.len() < config.min_records.max(2) {
        return Err(PredictError::TooFewRecords {
            have: records.len(),
            need: config.min_records.max(2),
        });
    }
    let schema = FeatureSchema::from_records(records, config.min_hint_share, config.max_hints);
    let set = training_set(records, &schema);
    let (weights, intercept) = fit_ridge(&set.rows, &set.targets, config)?;
    let mut model = Model {
        v: MODEL_FORMAT_VERSION,
        version,
        trained_at_ms,
        algorithm: ALGORITHM.to_string(),
        feature_names: schema.names(),
        schema,
        weights,
        intercept,
        candidates: candidate_names(),
        gate: Vec::new(),
        residuals: Residuals::default(),
        metrics: TrainingMetrics::default(),
    };
    let ridge_ln: Vec<f64> = {
        let mut by_record = vec![0.0; records.len()];
        for (row, &i) in set.rows.iter().zip(&set.index) {
            by_record[i] = clamp_to_request(model.ridge_ln(row), &records[i]);
        }
        by_record
    };
    drop(set);
    model.gate = fit_gate(records, &ridge_ln, config)?;

    // Final predictions on the training records, for residuals and metrics.
    let mut residuals = vec![0.0; records.len()];
    let mut cands = Vec::new();
    replay_submissions(records, |i, history| {
        let job = &records[i];
        candidates(history, job, ridge_ln[i], &mut cands);
        let ln = select_ln(&model.gate, &cands)
            .map(|c| c.0)
            .unwrap_or(ridge_ln[i]);
        residuals[i] = reference_runtime_s(job).ln() - clamp_to_request(ln, job);
    });
    let index: Vec<usize> = (0..records.len()).collect();
    model.residuals = residual_table(records, &index, &residuals);
    let abs_log2: Vec<f64> = residuals
        .iter()
        .map(|r| (r / std::f64::consts::LN_2).abs())
        .collect();
    model.metrics = TrainingMetrics {
        records: records.len() as u64,
        within_2x: abs_log2.iter().filter(|e| **e <= 1.0).count() as f64 / abs_log2.len() as f64,
        median_abs_log2: median(&abs_log2).unwrap_or(0.0),
    };
    Ok(model)
}

/// Fits the gate: for each candidate kind, a linear model of how close this
/// candidate comes to the truth (a soft "within 2x" score) on its gate
/// features: least squares through linfa with a small ridge. Rows per kind are thinned to at
/// most `MAX_GATE_ROWS` evenly over time to bound memory.
fn fit_gate(
    records: &[RunRecord],
    ridge_ln: &[f64],
    config: &TrainConfig,
) -> Result<Vec<Vec<f64>>, PredictError> {
    let stride = records.len().div_ceil(MAX_GATE_ROWS).max(1);
    let mut rows: Vec<Vec<[f64; GATE_FEATURES]>> = vec![Vec::new(); CANDIDATE_KINDS];
    let mut hits: Vec<Vec<f64>> = vec![Vec::new(); CANDIDATE_KINDS];
    let mut cands = Vec::new();
    let mut seen = 0usize;
    replay_submissions(records, |i, history| {
        seen += 1;
        if !seen.is_multiple_of(stride) {
            return;
        }
        let job = &records[i];
        let actual = reference_runtime_s(job).ln();
        candidates(history, job, ridge_ln[i], &mut cands);
        for c in &cands {
            let error = (clamp_to_request(c.ln, job) - actual).abs();
            rows[c.kind].push(c.gate);
            // A soft "within 2x": 1 when exact, 0.37 at 2x, ~0 beyond 4x.
            hits[c.kind].push((-(error / std::f64::consts::LN_2).powi(2)).exp());
        }
    });
    let mut gate = Vec::with_capacity(CANDIDATE_KINDS);
    for (kind_rows, kind_hits) in rows.iter().zip(&hits) {
        if records.len() < MIN_FITTED_GATE_RECORDS || kind_rows.len() < GATE_FEATURES * 4 {
            gate.push(prior_gate());
            continue;
        }
        let n = kind_rows.len();
        let mut x = Array2::<f64>::zeros((n + GATE_FEATURES, GATE_FEATURES));
        let mut y = Array1::<f64>::zeros(n + GATE_FEATURES);
        for (r, (row, hit)) in kind_rows.iter().zip(kind_hits).enumerate() {
            for (j, v) in row.iter().enumerate() {
                x[[r, j]] = *v;
            }
            y[r] = *hit;
        }
        let penalty = (config.ridge_lambda.max(1e-9) * n as f64).sqrt();
        // Penalise every weight but the bias.
        for j in 1..GATE_FEATURES {
            x[[n + j, j]] = penalty;
        }
        let fitted = LinearRegression::new()
            .with_intercept(false)
            .fit(&Dataset::new(x, y))
            .map_err(|e| PredictError::Fit(format!("gate: {e}")))?;
        let w: Vec<f64> = fitted.params().to_vec();
        if !w.iter().all(|v| v.is_finite()) {
            return Err(PredictError::Fit("gate: non-finite weights".into()));
        }
        gate.push(w);
    }
    Ok(gate)
}

/// The gate of a candidate kind with too little evidence to fit one: the
/// candidate's own recent hit rate (an EWMA of "within 2x", the quantity the
/// fitted gates estimate, so the scores are comparable), less a small margin
/// so that a fitted gate wins a tie. Without it a model trained on few runs —
/// or on bursts, where no job had finished when the others were submitted, so
/// few training rows saw any history — scored template candidates with a
/// constant and took the ridge or the global mean (fitted on every row),
/// whatever the job's class.
pub(crate) fn prior_gate() -> Vec<f64> {
    let mut w = vec![0.0; GATE_FEATURES];
    w[0] = -0.1;
    w[2] = 1.0;
    w
}

/// A job cannot run longer than it asked for (it would be killed), so the
/// prediction never exceeds the requested time.
pub fn clamp_to_request(predicted_ln: f64, job: &RunRecord) -> f64 {
    match job.requested_time_s.filter(|r| r.is_finite() && *r >= 1.0) {
        Some(requested) => predicted_ln.min(requested.ln()),
        None => predicted_ln,
    }
}

/// Ridge regression through linfa's least squares: the penalty is added as
/// extra rows `sqrt(lambda n) I` on standardised features, which also keeps the
/// system full rank when a feature is constant or two coincide. Optional Huber
/// re-weighting rounds refit with rows scaled by the square root of their weight.
fn fit_ridge(
    rows: &[Vec<f64>],
    targets: &[f64],
    config: &TrainConfig,
) -> Result<(Vec<f64>, f64), PredictError> {
    let n = rows.len();
    let p = rows.first().map(Vec::len).unwrap_or(0);
    let mut center = vec![0.0; p];
    let mut scale = vec![0.0; p];
    for row in rows {
        for (c, x) in center.iter_mut().zip(row) {
            *c += x;
        }
    }
    center.iter_mut().for_each(|c| *c /= n as f64);
    for row in rows {
        for ((s, x), c) in scale.iter_mut().zip(row).zip(&center) {
            *s += (x - c) * (x - c);
        }
    }
    scale.iter_mut().for_each(|s| *s = (*s / n as f64).sqrt());
    let y_mean = targets.iter().sum::<f64>() / n as f64;

    let penalty = (config.ridge_lambda.max(1e-9) * n as f64).sqrt();
    let mut sample_weight = vec![1.0f64; n];
    let mut solution = (vec![0.0; p], y_mean);
    for round in 0..=config.robust_rounds {
        let mut x = Array2::<f64>::zeros((n + p, p));
        let mut y = Array1::<f64>::zeros(n + p);
        for (i, row) in rows.iter().enumerate() {
            let w = sample_weight[i].sqrt();
            for j in 0..p {
                if scale[j] > 1e-12 {
                    x[[i, j]] = w * (row[j] - center[j]) / scale[j];
                }
            }
            y[i] = w * (targets[i] - y_mean);
        }
        for j in 0..p {
            x[[n + j, j]] = penalty;
        }
        let fitted = LinearRegression::new()
            .with_intercept(false)
            .fit(&Dataset::new(x, y))
            .map_err(|e| PredictError::Fit(e.to_string()))?;
        let params = fitted.params();
        let mut weights = vec![0.0; p];
        let mut intercept = y_mean;
        for j in 0..p {
            if scale[j] > 1e-12 {
                weights[j] = params[j] / scale[j];
                intercept -= weights[j] * center[j];
            }
        }
        if !weights.iter().all(|w| w.is_finite()) || !intercept.is_finite() {
            return Err(PredictError::Fit("non-finite weights".into()));
        }
        solution = (weights, intercept);
        if round < config.robust_rounds {
            let (weights, intercept) = &solution;
            for (i, row) in rows.iter().enumerate() {
                let predicted: f64 =
                    intercept + weights.iter().zip(row).map(|(w, x)| w * x).sum::<f64>();
                let r = (targets[i] - predicted).abs();
                sample_weight[i] = if r <= config.huber_delta {
                    1.0
                } else {
                    config.huber_delta / r
                };
            }
        }
    }
    Ok(solution)
}

fn residual_of(values: &[f64]) -> Residual {
    let med = median(values).unwrap_or(0.0);
    let deviations: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&deviations).unwrap_or(0.0);
    Residual {
        count: values.len() as u64,
        log_sigma: 1.4826 * mad,
        q90: quantile(values, 0.9).unwrap_or(0.0),
    }
}

fn residual_table(records: &[RunRecord], index: &[usize], residuals: &[f64]) -> Residuals {
    let mut groups: HashMap<u64, Vec<f64>> = HashMap::new();
    for (&i, r) in index.iter().zip(residuals) {
        if let Some(key) = group_key(&records[i]) {
            groups.entry(key).or_default().push(*r);
        }
    }
    let mut groups: Vec<(u64, Vec<f64>)> = groups
        .into_iter()
        .filter(|(_, v)| v.len() >= MIN_GROUP_RESIDUALS)
        .collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    groups.truncate(MAX_RESIDUAL_GROUPS);
    Residuals {
        global: (!residuals.is_empty()).then(|| residual_of(residuals)),
        by_group: groups
            .into_iter()
            .map(|(k, v)| (k, residual_of(&v)))
            .collect(),
    }
}
