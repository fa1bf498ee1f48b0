//! Placement policies and their settings.
//!
//! | policy | queue order (within a priority) | worker choice |
//! |---|---|---|
//! | `round-robin` | submission | next feasible worker in turn |
//! | `least-loaded` | submission | lowest share of slots in use |
//! | `fifo-fastest-idle` | submission | fastest worker with a free slot |
//! | `predictive` | shortest predicted runtime, with aging | earliest predicted finish |
//! | `oracle` | shortest *true* runtime, with aging | earliest true finish (simulation only) |
//!
//! Feasibility (enough free slots, every constraint label matched, worker
//! available) always comes first. Aging keeps `predictive` starvation-free: a
//! job's sort key is `predicted_s + aging_rate × submitted_s`, so at any moment
//! the queue is ordered by `predicted_s − aging_rate × waited_s`; a job that
//! waited `p / aging_rate` seconds is ahead of every job submitted after that,
//! however short. The ordering is time-invariant, so the queue stays a sorted
//! map and is never re-sorted as time passes.

use std::fmt;
use std::str::FromStr;

use augur_predict::PredictorConfig;
use serde::{Deserialize, Serialize};

/// A placement policy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    RoundRobin,
    LeastLoaded,
    FifoFastestIdle,
    /// The default.
    #[default]
    Predictive,
    /// Uses true runtimes: simulation only.
    Oracle,
}

impl Policy {
    pub const ALL: [Policy; 5] = [
        Policy::RoundRobin,
        Policy::LeastLoaded,
        Policy::FifoFastestIdle,
        Policy::Predictive,
        Policy::Oracle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::RoundRobin => "round-robin",
            Policy::LeastLoaded => "least-loaded",
            Policy::FifoFastestIdle => "fifo-fastest-idle",
            Policy::Predictive => "predictive",
            Policy::Oracle => "oracle",
        }
    }

    /// Whether the policy needs true runtimes (and so cannot run live).
    pub fn simulation_only(self) -> bool {
        self == Policy::Oracle
    }

    /// Whether the queue is ordered by (predicted) runtime rather than
    /// submission.
    pub fn orders_by_runtime(self) -> bool {
        matches!(self, Policy::Predictive | Policy::Oracle)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy {0:?}; expected one of round-robin, least-loaded, fifo-fastest-idle, predictive, oracle")]
pub struct UnknownPolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}

/// Schema version of [`PlacementConfig`].
pub const PLACEMENT_CONFIG_VERSION: u32 = 1;

/// The placement configuration: what `tune --apply` stores
/// (`/augur/config/placement`) and what a scheduler is built from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlacementConfig {
    /// Schema version.
    pub v: u32,
    pub policy: Policy,
    /// Seconds of predicted runtime forgiven per second waited (> 0 for the
    /// no-starvation guarantee).
    pub aging_rate: f64,
    /// A running job past its prediction is assumed to need `overrun_factor ×`
    /// its elapsed time in total (Tsafrir et al.'s correction, made
    /// multiplicative).
    pub overrun_factor: f64,
    /// Cold start threshold and no-model fallback of the runtime predictor.
    pub predictor: PredictorConfig,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            v: PLACEMENT_CONFIG_VERSION,
            policy: Policy::Predictive,
            aging_rate: 0.1,
            overrun_factor: 2.0,
            predictor: PredictorConfig::default(),
        }
    }
}

/// Settings of a [`crate::Scheduler`] beyond the placement configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    pub placement: PlacementConfig,
    /// Most queued jobs examined per `next_assignments` call (bounds the cost
    /// when the head of the queue fits nowhere).
    pub max_scan: usize,
    /// Candidate workers kept in each decision, best first (0: none).
    pub traced_candidates: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            placement: PlacementConfig::default(),
            max_scan: 4096,
            traced_candidates: 4,
        }
    }
}

impl SchedulerConfig {
    /// The default settings with another policy.
    pub fn with_policy(policy: Policy) -> Self {
        let mut config = SchedulerConfig::default();
        config.placement.policy = policy;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for policy in Policy::ALL {
            assert_eq!(policy.name().parse::<Policy>(), Ok(policy));
            let json = serde_json::to_string(&policy).expect("serialises");
            assert_eq!(json, format!("\"{}\"", policy.name()));
        }
        assert!("fastest".parse::<Policy>().is_err());
    }

    #[test]
    fn config_parses_with_defaults() {
        let config: PlacementConfig =
            serde_json::from_str(r#"{"policy":"least-loaded"}"#).expect("parses");
        assert_eq!(config.policy, Policy::LeastLoaded);
        assert_eq!(config.v, PLACEMENT_CONFIG_VERSION);
    }
}
