//! Runtime prediction for Augur: how long will this job run?
//!
//! Everything is predicted as ln(runtime on a speed-1 worker) from what is
//! known when a job is submitted — its class (spec name), command, user/tenant,
//! labels, requested resources and time, the submitter's numeric hints, hour
//! and weekday — and from *causal history statistics*: for each template of
//! similar jobs (user, user+class, class, user+command, user+request, …) the
//! recent runtimes, their EWMA and mean, how many there were, and how well each
//! template's own estimates have been doing. Those statistics are the target
//! encoding of the high-cardinality categories, computed from finished runs
//! only ([`history`]). A job's runtime on a worker of speed `s` is the
//! prediction divided by `s`; recorded runtimes are multiplied back by the
//! speed of the worker that ran them.
//!
//! # The model, and why
//!
//! linfa has no regression trees. Measured on the two shipped traces (KTH SP2,
//! NASA iPSC; chronological replay, retraining as history grows, see
//! [`replay::evaluate`]), fraction of jobs within 2x:
//!
//! | model | KTH | NASA |
//! |---|---|---|
//! | best baseline (user last-2 / user+application last-2) | 49.9% | 60.4% |
//! | ridge regression of ln(runtime) on all features (`linfa-linear`) | 44.9% | 51.7% |
//! | same, with Huber or Tukey re-weighting (robust IRLS) | 47–52% | 53–57% |
//! | gate over template experts + ridge, with consensus | 63.9% | 62.8% |
//! | same, + class+CPU and time-of-week templates, slow hit rates, close runner-up blended | 64.5% | 63.5% |
//! | **same, + a mode-of-recent-runs expert; the gate sees how many recent runs landed near each candidate** | **64.6%** | **64.2%** |
//!
//! A regression *averages* its inputs, but runtimes are multi-modal: a user's
//! next job usually repeats one of their recent runs almost exactly, or is
//! something else entirely. An average of candidates lands between the modes
//! and misses both. So the model *selects* ([`experts`]): every template with
//! history proposes estimates (last run, mean of last two, median of last three
//! and five, the mode of the last five — the recent runtime most other recent
//! runs were within 2x of —, requested time × the template's runtime/request
//! ratio), the ridge
//! regression (`linfa-linear` least squares, ridge penalty as augmented rows)
//! proposes one, and per candidate kind a linear gate, also fitted with
//! `linfa-linear`, scores how close the candidate is likely to be — from its
//! recent error and hit rate, its history count, the spread of recent runs, how
//! many other candidates agree with it (the strongest signal), what share of
//! the recent runs of its template and of the job's user+class landed within
//! 2x of it, and its runtime range. The best-scored candidate is the prediction, capped by the requested
//! time; when the runner-up scores almost as well and lies within 4x, the two
//! are blended in log space (between two modes the gate cannot tell apart, the
//! midpoint is often within 2x of both). Training on 100k records takes about
//! 5 s on one thread and a prediction about 5 µs (`cargo bench -p
//! augur-benches --bench model`); the model is weights only, tens of KB of
//! JSON (it fits one etcd value).

//!
//! Not tried, and why: `linfa-nn` neighbours would have to ship their training
//! points in the model (megabytes, over etcd's value limit) and average
//! neighbours' runtimes just as the regression does; `linfa-elasticnet` is the
//! same linear family as the ridge (the L1 part would only prune features, and
//! its coordinate descent converges slowly on these correlated features).
//!
//! Uncertainty: the model keeps, per job class (or user), the robust spread and
//! the 90th percentile of its training residuals, and reports them with every
//! point estimate ([`Prediction`]).
//!
//! Cold start: with no model yet, predictions come from the user+class last-2
//! baseline ([`FallbackReason::NoModel`]); with a model but fewer than
//! `min_history` runs sharing any template with the job, the model's estimate is
//! returned labelled [`FallbackReason::ColdStart`], so the scheduler can place
//! that job least-loaded and say so.
//!
//! Nothing here does I/O; [`train`] is synchronous and CPU-bound (run it in
//! `spawn_blocking`), and a [`Model`] (de)serialises as versioned JSON.

pub mod experts;
pub mod features;
pub mod history;
pub mod metrics;
pub mod model;
pub mod predictor;
pub mod replay;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use features::{FeatureSchema, BASE_FEATURES};
pub use history::{History, Template};
pub use metrics::{PredictionQuality, QualityAccumulator};
pub use model::{train, Model, TrainConfig, MODEL_FORMAT_VERSION};
pub use predictor::{
    Baseline, FallbackReason, Prediction, PredictorConfig, RuntimePredictor, Source,
};
pub use replay::{causal_order, evaluate, informs, Evaluation, EvaluationOptions, ReplayEvent};

/// Errors of training and of loading a stored model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictError {
    #[error("too few finished runs to train on: {have}, need at least {need}")]
    TooFewRecords { have: usize, need: usize },
    #[error("fitting the model failed: {0}")]
    Fit(String),
    #[error("model is not valid JSON of the expected shape: {0}")]
    Format(String),
    #[error("model format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
}
