//! Placement quality: what `tune` reports per policy.
//!
//! * job completion time (JCT) = finish − submit: mean and median;
//! * bounded slowdown = max(1, JCT / max(runtime, 10 s)) (Feitelson's bound keeps
//!   very short jobs from dominating): its 99th percentile;
//! * makespan = last finish − first submit.
//!
//! Jobs that never ran (no feasible worker) are left out and counted.

use augur_predict::metrics::{median, quantile};
use serde::{Deserialize, Serialize};

use crate::sim::JobOutcome;

/// Runtime under which slowdown is bounded, seconds.
pub const SLOWDOWN_BOUND_S: f64 = 10.0;

/// One policy's placement quality (a row of `tune`'s placement table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementQuality {
    pub policy: String,
    /// The aging rate simulated, for the policies that order by runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aging_rate: Option<f64>,
    pub mean_jct_s: f64,
    pub median_jct_s: f64,
    pub p99_bounded_slowdown: f64,
    pub makespan_s: f64,
    /// Jobs that never ran.
    #[serde(skip)]
    pub unplaced: usize,
}

impl PlacementQuality {
    /// The row's name in tables and plots: the policy, with its aging rate
    /// when `tune` compared several.
    pub fn label(&self, several_agings: bool) -> String {
        match self.aging_rate {
            Some(rate) if several_agings && self.policy == "predictive" => {
                format!("predictive a={rate}")
            }
            _ => self.policy.clone(),
        }
    }
}

/// Computes the quality of a simulated run.
pub fn placement_quality(policy: &str, outcomes: &[JobOutcome]) -> PlacementQuality {
    let ran: Vec<&JobOutcome> = outcomes.iter().filter(|o| o.start_ms >= 0).collect();
    let jct: Vec<f64> = ran
        .iter()
        .map(|o| (o.finish_ms - o.submit_ms) as f64 / 1000.0)
        .collect();
    let slowdown: Vec<f64> = ran
        .iter()
        .zip(&jct)
        .map(|(o, j)| (j / o.runtime_s.max(SLOWDOWN_BOUND_S)).max(1.0))
        .collect();
    let first = outcomes.iter().map(|o| o.submit_ms).min().unwrap_or(0);
    let last = ran.iter().map(|o| o.finish_ms).max().unwrap_or(first);
    PlacementQuality {
        policy: policy.to_string(),
        aging_rate: None,
        mean_jct_s: if jct.is_empty() {
            0.0
        } else {
            jct.iter().sum::<f64>() / jct.len() as f64
        },
        median_jct_s: median(&jct).unwrap_or(0.0),
        p99_bounded_slowdown: quantile(&slowdown, 0.99).unwrap_or(1.0),
        makespan_s: (last - first) as f64 / 1000.0,
        unplaced: outcomes.len() - ran.len(),
    }
}
