//! Prediction-quality measures, as in the runtime-prediction literature.
//!
//! Both the prediction `p` and the actual runtime `a` are floored at
//! [`MIN_RUNTIME_S`] (10 ms), so a 0-second job is not an infinite error:
//!
//! * `within_2x`: share of jobs with `a/2 <= p <= 2a`;
//! * `median_abs_log2`: median of `|log2(p/a)|` (0 = perfect, 1 = off by 2x);
//! * `mean_accuracy`: mean of `min(p,a)/max(p,a)` (Tsafrir et al.'s accuracy);
//! * `underpredicted`: share of jobs with `p < a` (what hurts a scheduler most:
//!   it plans on a slot that is not free).

use serde::{Deserialize, Serialize};

use crate::history::MIN_RUNTIME_S;

/// Median of `values` (unsorted), `None` when empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The `q` quantile (0..=1) of `values` by linear interpolation.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] * (1.0 - frac) + sorted[hi] * frac)
}

/// Accumulates (prediction, actual) pairs.
#[derive(Clone, Debug, Default)]
pub struct QualityAccumulator {
    abs_log2: Vec<f64>,
    accuracy_sum: f64,
    under: u64,
}

impl QualityAccumulator {
    pub fn add(&mut self, predicted_s: f64, actual_s: f64) {
        let p = if predicted_s.is_finite() {
            predicted_s.max(MIN_RUNTIME_S)
        } else {
            MIN_RUNTIME_S
        };
        let a = if actual_s.is_finite() {
            actual_s.max(MIN_RUNTIME_S)
        } else {
            MIN_RUNTIME_S
        };
        self.abs_log2.push((p / a).log2().abs());
        self.accuracy_sum += p.min(a) / p.max(a);
        if p < a {
            self.under += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.abs_log2.len()
    }

    pub fn is_empty(&self) -> bool {
        self.abs_log2.is_empty()
    }

    /// The summary under `predictor`'s name.
    pub fn finish(&self, predictor: &str) -> PredictionQuality {
        let n = self.abs_log2.len().max(1) as f64;
        PredictionQuality {
            predictor: predictor.to_string(),
            within_2x: self.abs_log2.iter().filter(|e| **e <= 1.0).count() as f64 / n,
            median_abs_log2: median(&self.abs_log2).unwrap_or(0.0),
            mean_accuracy: self.accuracy_sum / n,
            underpredicted: self.under as f64 / n,
        }
    }
}

/// One predictor's quality over a replay (a row of `tune`'s prediction table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PredictionQuality {
    pub predictor: String,
    pub within_2x: f64,
    pub median_abs_log2: f64,
    pub mean_accuracy: f64,
    pub underpredicted: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[0.0, 10.0], 0.9), Some(9.0));
    }

    #[test]
    fn measures_follow_their_definitions() {
        let mut acc = QualityAccumulator::default();
        acc.add(10.0, 10.0); // exact
        acc.add(10.0, 40.0); // 4x under
        acc.add(0.0, MIN_RUNTIME_S / 2.0); // both floored to MIN_RUNTIME_S: exact
        acc.add(30.0, 20.0); // 1.5x over
        let q = acc.finish("x");
        assert_eq!(q.within_2x, 0.75);
        assert_eq!(q.underpredicted, 0.25);
        assert!((q.mean_accuracy - (1.0 + 0.25 + 1.0 + 2.0 / 3.0) / 4.0).abs() < 1e-12);
        assert!((q.median_abs_log2 - (1.5f64.log2() / 2.0)).abs() < 1e-12);
    }
}
