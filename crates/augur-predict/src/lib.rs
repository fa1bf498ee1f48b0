//! Runtime prediction for Augur: how long will this job run?
//!
//! The model predicts ln(runtime on a speed-1 worker) from what is known when a
//! job is submitted — its class (spec name), command, user/tenant, labels,
//! requested resources and time, the submitter's numeric hints, hour and weekday
//! — and from *causal history statistics*: for each template of similar jobs
//! (user, user+class, class, user+command, user+request, …) the last runtimes,
//! their EWMA and mean, and how many there were. Those statistics are the
//! target encoding of the high-cardinality categories, computed from finished
//! runs only ([`history`]). A job's runtime on a worker of speed `s` is the
//! prediction divided by `s`; recorded runtimes are multiplied back by the
//! speed of the worker that ran them.
//!
//! # Why ridge regression (linfa-linear) on ln(runtime)
//!
//! linfa has no regression trees. Of what it has, we compared on the two
//! shipped traces (KTH SP2 and NASA iPSC, replayed chronologically with
//! retraining every 2000 finished runs, see the placement crate's `tune`):
//!
//! * **ridge via `linfa-linear`'s least squares** on standardised features,
//!   with two Huber re-weighting rounds: it learns how much to trust each
//!   template (e.g. user+request over user alone) and combines them; training
//!   on 100k records takes well under a second, inference is one dot product
//!   (~1-3 µs with feature extraction), and the model is ~70 numbers, so it fits
//!   an etcd value with room to spare;
//! * **k-nearest neighbours (`linfa-nn`)** over the same target-encoded
//!   features: no better on either trace in our runs, ~10x slower to query, and
//!   it must ship its training points (megabytes: over etcd's value limit);
//! * **elastic net (`linfa-elasticnet`)**: same accuracy as ridge here (the L1
//!   part zeroed nothing useful) and slower to converge on correlated features.
//!
//! Uncertainty: the model keeps, per job class (or user), the robust spread and
//! the 90th percentile of its training residuals, and reports them with every
//! point estimate ([`Prediction`]).
//!
//! Cold start: with no model yet, predictions come from the user+class last-2
//! baseline; with a model but fewer than `min_history` similar runs, the model's
//! (global) estimate is returned labelled [`FallbackReason::ColdStart`], so the
//! scheduler can place that job least-loaded and say so.
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
pub use replay::{causal_order, evaluate, Evaluation, EvaluationOptions, ReplayEvent};

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
