//! Chronological replay of recorded runs, and the offline evaluation of the
//! predictors built on it.
//!
//! [`causal_order`] turns records into a stream of submit and finish events in
//! time order, finishes first at equal times: a run becomes history at its
//! finish, and only runs that finished at or before a job's submission may
//! inform its prediction. [`evaluate`] walks that stream, retraining the model
//! on the runs finished so far every `retrain_every` finishes (as the leader
//! retrains on a schedule), and scores the model and every baseline on every job.

use augur_core::RunRecord;
use serde::{Deserialize, Serialize};

use crate::history::reference_runtime_s;
use crate::metrics::{PredictionQuality, QualityAccumulator};
use crate::model::{train, TrainConfig};
use crate::predictor::{Baseline, PredictorConfig, RuntimePredictor};

/// One step of a replay: index into the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayEvent {
    Submit(usize),
    Finish(usize),
}

/// Submit and finish events of `records` in time order; at equal times
/// finishes come first, then by record index, so the order is deterministic —
/// except that a run that took no time (it finished when it was submitted, or
/// claims to have finished before) finishes after the submissions of its
/// instant, its own included: a run never informs its own prediction.
/// So a run informs a job submitted at `s` if it finished before `s`, or at
/// `s` having been submitted earlier ([`informs`]).
pub fn causal_order(records: &[RunRecord]) -> Vec<ReplayEvent> {
    const FINISH: u8 = 0;
    const SUBMIT: u8 = 1;
    const INSTANT_FINISH: u8 = 2;
    let mut events: Vec<(i64, u8, usize)> = Vec::with_capacity(records.len() * 2);
    for (i, r) in records.iter().enumerate() {
        events.push((r.submitted_at_ms, SUBMIT, i));
        let finish = r.finished_at_ms.max(r.submitted_at_ms);
        let kind = if finish > r.submitted_at_ms {
            FINISH
        } else {
            INSTANT_FINISH
        };
        events.push((finish, kind, i));
    }
    events.sort_unstable();
    events
        .into_iter()
        .map(|(_, kind, i)| {
            if kind == SUBMIT {
                ReplayEvent::Submit(i)
            } else {
                ReplayEvent::Finish(i)
            }
        })
        .collect()
}

/// Whether `run` is history for a job submitted at `submitted_at_ms` in a
/// causal replay ([`causal_order`]).
pub fn informs(run: &RunRecord, submitted_at_ms: i64) -> bool {
    let finish = run.finished_at_ms.max(run.submitted_at_ms);
    finish < submitted_at_ms || (finish == submitted_at_ms && run.submitted_at_ms < finish)
}

/// Settings of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvaluationOptions {
    /// Retrain after this many new finished runs (sooner while the history is
    /// small: whenever it has grown by half).
    pub retrain_every: usize,
    /// Train on at most the newest this many finished runs.
    pub max_train_records: usize,
    pub train: TrainConfig,
    pub predictor: PredictorConfig,
}

impl Default for EvaluationOptions {
    fn default() -> Self {
        EvaluationOptions {
            retrain_every: 2000,
            max_train_records: 100_000,
            train: TrainConfig::default(),
            predictor: PredictorConfig::default(),
        }
    }
}

/// Result of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub jobs: usize,
    /// `model` first, then the baselines in [`Baseline::ALL`] order
    /// (`requested_time` only when some record has a requested time).
    pub quality: Vec<PredictionQuality>,
    /// Times the model was (re)trained.
    pub trainings: u64,
    /// Jobs the model predicted while cold (no model yet, or no similar runs).
    pub model_fallbacks: u64,
}

/// Replays `records` chronologically and scores every predictor on every job.
pub fn evaluate(records: &[RunRecord], options: &EvaluationOptions) -> Evaluation {
    let mut predictor = RuntimePredictor::new(options.predictor.clone());
    let baselines: Vec<Baseline> = Baseline::ALL
        .into_iter()
        .filter(|b| {
            *b != Baseline::RequestedTime || records.iter().any(|r| r.requested_time_s.is_some())
        })
        .collect();
    let mut model_quality = QualityAccumulator::default();
    let mut baseline_quality = vec![QualityAccumulator::default(); baselines.len()];
    let mut finished: Vec<RunRecord> = Vec::new();
    let mut since_training = 0usize;
    let mut trainings = 0u64;
    let mut fallbacks = 0u64;
    for event in causal_order(records) {
        match event {
            ReplayEvent::Finish(i) => {
                predictor.observe(&records[i]);
                finished.push(records[i].clone());
                since_training += 1;
            }
            ReplayEvent::Submit(i) => {
                // Retrain when the history has doubled while it is small, then on
                // the regular schedule (a leader retrains on a timer; this is its
                // replay equivalent).
                let every = options.retrain_every.min((finished.len() / 2).max(1));
                let due = predictor.model().is_none() || since_training >= every;
                if due && finished.len() >= options.train.min_records {
                    let start = finished.len().saturating_sub(options.max_train_records);
                    if let Ok(model) = train(&finished[start..], &options.train, trainings + 1, 0) {
                        predictor.set_model(Some(model));
                        trainings += 1;
                    }
                    since_training = 0;
                }
                let job = &records[i];
                let actual = reference_runtime_s(job);
                let prediction = predictor.predict(job);
                if prediction.is_fallback() {
                    fallbacks += 1;
                }
                model_quality.add(prediction.seconds, actual);
                for (b, acc) in baselines.iter().zip(baseline_quality.iter_mut()) {
                    acc.add(b.predict(predictor.history(), job), actual);
                }
            }
        }
    }
    let mut quality = vec![model_quality.finish("model")];
    quality.extend(
        baselines
            .iter()
            .zip(&baseline_quality)
            .map(|(b, acc)| acc.finish(b.name())),
    );
    Evaluation {
        jobs: records.len(),
        quality,
        trainings,
        model_fallbacks: fallbacks,
    }
}
