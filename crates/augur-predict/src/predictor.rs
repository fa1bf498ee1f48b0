//! Predictions: the model's point estimate with its uncertainty, the baselines
//! it is measured against, and [`RuntimePredictor`], the object a scheduler
//! holds (a model, if any, plus the causal history it reads).

use std::fmt;

use augur_core::RunRecord;
use serde::{Deserialize, Serialize};

use crate::features::PRIOR_LN_RUNTIME;
use crate::history::{History, Template, MIN_RUNTIME_S};
use crate::model::{Model, Scratch};

/// Spread assumed when nothing better is known: ln units (a factor of e).
pub const DEFAULT_LOG_SIGMA: f64 = 1.0;
/// z-score of the 90th percentile of a normal distribution.
const Z90: f64 = 1.281_551_565_5;

/// Why a prediction did not come from the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum FallbackReason {
    /// No model is trained yet; the estimate is a history baseline.
    NoModel,
    /// Too few similar runs for this job (`runs` < `needed`): the model's
    /// estimate rests on global statistics only.
    ColdStart { runs: u64, needed: u64 },
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FallbackReason::NoModel => f.write_str("no trained model"),
            FallbackReason::ColdStart { runs, needed } => {
                write!(f, "cold start: {runs} similar runs, {needed} needed")
            }
        }
    }
}

/// Where a prediction came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Model,
    Fallback(FallbackReason),
}

/// A runtime prediction for a job on a speed-1 worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Point estimate (the median of the predicted distribution), seconds.
    pub seconds: f64,
    /// Spread of ln(actual/predicted) for jobs like this one.
    pub log_sigma: f64,
    /// 90th percentile of the runtime, seconds.
    pub p90_seconds: f64,
    pub source: Source,
    /// Version of the model that made it, if any.
    pub model_version: Option<u64>,
}

impl Prediction {
    /// Seconds on a worker of relative `speed`.
    pub fn seconds_on(&self, speed: f64) -> f64 {
        self.seconds / augur_core::run::sanitize_speed(speed)
    }

    pub fn is_fallback(&self) -> bool {
        matches!(self.source, Source::Fallback(_))
    }
}

/// The simple predictors `tune` compares the model against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The submitter's requested time (timeout).
    RequestedTime,
    /// Mean of the user's last two runtimes (Tsafrir, Etsion & Feitelson 2007).
    UserLast2,
    /// Mean of the last two runtimes of the same user and job class.
    UserClassLast2,
    /// Arithmetic mean of all runtimes so far.
    GlobalMean,
}

impl Baseline {
    pub const ALL: [Baseline; 4] = [
        Baseline::RequestedTime,
        Baseline::UserLast2,
        Baseline::UserClassLast2,
        Baseline::GlobalMean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Baseline::RequestedTime => "requested_time",
            Baseline::UserLast2 => "user_last2",
            Baseline::UserClassLast2 => "user_class_last2",
            Baseline::GlobalMean => "global_mean",
        }
    }

    /// Seconds on a speed-1 worker. Without the data it needs, each falls back
    /// along the chain user+class → user → requested time → global mean → one
    /// minute, as Tsafrir et al. fall back to the user's estimate.
    pub fn predict(self, history: &History, job: &RunRecord) -> f64 {
        let requested = job
            .requested_time_s
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| r.max(MIN_RUNTIME_S));
        let global = || {
            history
                .global()
                .mean_s()
                .unwrap_or_else(|| PRIOR_LN_RUNTIME.exp())
        };
        let last2 = |t: Template| history.stats(t, job).and_then(|s| s.last2_mean());
        match self {
            Baseline::RequestedTime => requested.unwrap_or_else(global),
            Baseline::GlobalMean => global(),
            Baseline::UserLast2 => last2(Template::User).or(requested).unwrap_or_else(global),
            Baseline::UserClassLast2 => last2(Template::UserClass)
                .or_else(|| last2(Template::User))
                .or(requested)
                .unwrap_or_else(global),
        }
    }

    /// True if the baseline has its own data for `job` (a requested time, or
    /// history of the template) rather than a fallback.
    pub fn applies(self, history: &History, job: &RunRecord) -> bool {
        match self {
            Baseline::RequestedTime => job.requested_time_s.is_some(),
            Baseline::GlobalMean => !history.is_empty(),
            Baseline::UserLast2 => history.stats(Template::User, job).is_some(),
            Baseline::UserClassLast2 => history.stats(Template::UserClass, job).is_some(),
        }
    }
}

/// Settings of a [`RuntimePredictor`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PredictorConfig {
    /// Fewest runs sharing any template with a job for the model's estimate to
    /// count as informed (otherwise it is labelled a cold-start fallback).
    pub min_history: u64,
    /// Estimate used when there is no model.
    pub fallback: Baseline,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        PredictorConfig {
            min_history: 2,
            fallback: Baseline::UserClassLast2,
        }
    }
}

/// A model (if trained) and the causal history its features read.
#[derive(Clone, Debug, Default)]
pub struct RuntimePredictor {
    model: Option<Model>,
    history: History,
    config: PredictorConfig,
}

impl RuntimePredictor {
    pub fn new(config: PredictorConfig) -> Self {
        RuntimePredictor {
            model: None,
            history: History::new(),
            config,
        }
    }

    /// A predictor that starts warm: a stored model and the history rebuilt from
    /// stored runs ([`History::from_records`]).
    pub fn with_model(model: Option<Model>, history: History, config: PredictorConfig) -> Self {
        RuntimePredictor {
            model,
            history,
            config,
        }
    }

    /// Swaps the model (after a retrain or a leader change).
    pub fn set_model(&mut self, model: Option<Model>) {
        self.model = model;
    }

    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    pub fn model_version(&self) -> Option<u64> {
        self.model.as_ref().map(|m| m.version)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Adds a finished run to the history. Call when the run has finished.
    pub fn observe(&mut self, record: &RunRecord) {
        self.history.observe(record);
    }

    /// Predicts `job`'s runtime on a speed-1 worker from what is known now.
    pub fn predict(&self, job: &RunRecord) -> Prediction {
        let Some(model) = &self.model else {
            let seconds = self.config.fallback.predict(&self.history, job);
            return Prediction {
                seconds,
                log_sigma: DEFAULT_LOG_SIGMA,
                p90_seconds: seconds * (Z90 * DEFAULT_LOG_SIGMA).exp(),
                source: Source::Fallback(FallbackReason::NoModel),
                model_version: None,
            };
        };
        let mut scratch = Scratch::default();
        let (ln, _, coverage) = model.predict_ln(&self.history, job, &mut scratch);
        let residual = model.residuals.for_job(job);
        let log_sigma = residual.map(|r| r.log_sigma).unwrap_or(DEFAULT_LOG_SIGMA);
        let q90 = residual.map(|r| r.q90).unwrap_or(Z90 * DEFAULT_LOG_SIGMA);
        let source = if coverage.max_count < self.config.min_history {
            Source::Fallback(FallbackReason::ColdStart {
                runs: coverage.max_count,
                needed: self.config.min_history,
            })
        } else {
            Source::Model
        };
        let seconds = ln.exp().max(MIN_RUNTIME_S);
        Prediction {
            seconds,
            log_sigma,
            p90_seconds: (ln + q90).exp().max(seconds),
            source,
            model_version: Some(model.version),
        }
    }
}
