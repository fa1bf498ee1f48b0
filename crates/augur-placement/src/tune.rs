//! `tune`: replay recorded runs, measure every predictor and every policy, and
//! recommend a placement configuration.
//!
//! Prediction quality is measured on the runs' own timeline (a run becomes
//! history at submit + wait + runtime, as recorded), with the model retrained on
//! the runs finished so far every `retrain_every` finishes. Placement quality is
//! measured by simulating the runs on the given workers at the given load under
//! each policy ([`crate::sim`]). Large traces can be sampled: `max_jobs`
//! consecutive jobs (by submission) from a start chosen by the seed, so user
//! histories inside the sample stay intact; the report says so.
//!
//! The recommendation is the live-capable policy (not `oracle`) with the lowest
//! mean job completion time, and the predictor with the most jobs within 2x.

use augur_core::RunRecord;
use augur_predict::{evaluate, EvaluationOptions, PredictionQuality};
use serde::{Deserialize, Serialize};

use crate::metrics::PlacementQuality;
use crate::policy::{PlacementConfig, Policy, SchedulerConfig};
use crate::sim::{parse_workers, simulate, SimError, SimOptions};

/// Options of [`tune`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TuneOptions {
    /// Workers as `COUNTxSPEED[:SLOTS],...`.
    pub workers: String,
    /// Target offered load of the simulations.
    pub load: f64,
    /// Picks the sample window; the simulations themselves are deterministic.
    pub seed: u64,
    /// Replay at most this many jobs (a consecutive window).
    pub max_jobs: Option<usize>,
    /// Policies to simulate.
    pub policies: Vec<Policy>,
    /// Placement settings shared by all simulated policies (aging, overrun
    /// correction, cold start).
    pub placement: PlacementConfig,
    /// More aging rates to simulate `predictive` with, besides
    /// `placement.aging_rate`; the best one is recommended.
    pub aging_rates: Vec<f64>,
    pub evaluation: EvaluationOptions,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            workers: "8x1,4x2,4x4".to_string(),
            load: 0.8,
            seed: 1,
            max_jobs: None,
            policies: Policy::ALL.to_vec(),
            placement: PlacementConfig::default(),
            aging_rates: Vec::new(),
            evaluation: EvaluationOptions::default(),
        }
    }
}

/// How the input was sampled, if it was.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleInfo {
    /// Jobs in the input.
    pub total_jobs: usize,
    /// Index (in submission order) of the first job replayed.
    pub first: usize,
}

/// What `tune` recommends: the configuration `--apply` stores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub policy: Policy,
    pub predictor: String,
    pub config: PlacementConfig,
    /// Why, in words.
    pub reason: String,
}

/// The report; its JSON is `{"jobs","prediction","placement","recommended"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    pub jobs: usize,
    pub prediction: Vec<PredictionQuality>,
    pub placement: Vec<PlacementQuality>,
    pub recommended: Recommendation,
    /// Set when the input was sampled (not part of the JSON shape; the table
    /// and the plot say it).
    #[serde(skip)]
    pub sample: Option<SampleInfo>,
    /// The options the report was made with (for the table's header).
    #[serde(skip)]
    pub options: Option<TuneOptions>,
}

/// Why `tune` cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("no runs to replay")]
    NoRuns,
    #[error("max_jobs must be at least 1")]
    EmptySample,
    #[error("aging rates must be numbers in (0, {MAX_AGING_RATE}], at most {MAX_AGING_RATES} of them; got {0:?}")]
    AgingRates(Vec<f64>),
}

/// Largest aging rate `tune` simulates (a job's order key drops by this many
/// seconds per second waited; far above it the queue is FIFO).
pub const MAX_AGING_RATE: f64 = 100.0;
/// Most aging rates one `tune` compares.
pub const MAX_AGING_RATES: usize = 8;

/// Checks extra aging rates for [`TuneOptions::aging_rates`].
pub fn check_aging_rates(rates: &[f64]) -> Result<(), TuneError> {
    let valid = |r: &f64| r.is_finite() && *r > 0.0 && *r <= MAX_AGING_RATE;
    if rates.len() > MAX_AGING_RATES || !rates.iter().all(valid) {
        return Err(TuneError::AgingRates(rates.to_vec()));
    }
    Ok(())
}

/// The aging rates to simulate `predictive` with: the configured one and the
/// extra ones, deduplicated, ascending.
fn aging_rates(options: &TuneOptions) -> Result<Vec<f64>, TuneError> {
    check_aging_rates(&options.aging_rates)?;
    let mut rates = options.aging_rates.clone();
    rates.push(options.placement.aging_rate);
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    Ok(rates)
}

/// SplitMix64: a tiny, stable PRNG so a seed means the same sample everywhere.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The runs to replay: all of them in submission order, or a window of
/// `max_jobs` consecutive ones starting where the seed says.
pub fn sample(
    records: &[RunRecord],
    max_jobs: Option<usize>,
    seed: u64,
) -> Result<(Vec<RunRecord>, Option<SampleInfo>), TuneError> {
    let mut sorted: Vec<&RunRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.submitted_at_ms);
    match max_jobs {
        Some(0) => Err(TuneError::EmptySample),
        Some(max) if max < sorted.len() => {
            let first = (splitmix64(seed) % (sorted.len() - max + 1) as u64) as usize;
            let window = sorted[first..first + max]
                .iter()
                .map(|r| (*r).clone())
                .collect();
            Ok((
                window,
                Some(SampleInfo {
                    total_jobs: sorted.len(),
                    first,
                }),
            ))
        }
        _ => Ok((sorted.into_iter().cloned().collect(), None)),
    }
}

/// Replays `records` and reports prediction and placement quality.
/// Synchronous and CPU-bound (seconds on a full trace): run it off an async
/// runtime.
pub fn tune(records: &[RunRecord], options: &TuneOptions) -> Result<TuneReport, TuneError> {
    if records.is_empty() {
        return Err(TuneError::NoRuns);
    }
    let workers = parse_workers(&options.workers)?;
    if !(options.load.is_finite() && options.load > 0.0) {
        return Err(SimError::Load(options.load).into());
    }
    let rates = aging_rates(options)?;
    let (runs, sample) = sample(records, options.max_jobs, options.seed)?;
    let evaluation = evaluate(&runs, &options.evaluation);

    let mut placement = Vec::new();
    for &policy in &options.policies {
        let policy_rates = match policy {
            Policy::Predictive => rates.clone(),
            _ => vec![options.placement.aging_rate],
        };
        for aging_rate in policy_rates {
            let mut scheduler = SchedulerConfig::with_policy(policy);
            scheduler.placement = PlacementConfig {
                policy,
                aging_rate,
                ..options.placement.clone()
            };
            let sim = SimOptions {
                workers: workers.clone(),
                load: Some(options.load),
                scheduler,
                retrain_every: options.evaluation.retrain_every,
                train: options.evaluation.train.clone(),
                oracle_estimates: None,
            };
            let mut quality = simulate(&runs, &sim)?.quality;
            quality.aging_rate = policy.orders_by_runtime().then_some(aging_rate);
            placement.push(quality);
        }
    }

    let best_policy = placement
        .iter()
        .filter_map(|q| Some((q.policy.parse::<Policy>().ok()?, q)))
        .filter(|(p, _)| !p.simulation_only())
        .min_by(|a, b| a.1.mean_jct_s.total_cmp(&b.1.mean_jct_s));
    let best_aging = best_policy
        .and_then(|(_, q)| q.aging_rate)
        .unwrap_or(options.placement.aging_rate);
    let best_predictor = evaluation
        .quality
        .iter()
        .max_by(|a, b| a.within_2x.total_cmp(&b.within_2x))
        .map(|q| q.predictor.clone())
        .unwrap_or_else(|| "model".to_string());
    let several = rates.len() > 1;
    let (policy, reason) = match best_policy {
        Some((policy, quality)) => (
            policy,
            format!(
                "{} has the lowest mean job completion time ({:.0} s) of the policies that can run live; {} predicts best ({} of jobs within 2x)",
                quality.label(several),
                quality.mean_jct_s,
                best_predictor,
                evaluation
                    .quality
                    .iter()
                    .find(|q| q.predictor == best_predictor)
                    .map(|q| format!("{:.1}%", q.within_2x * 100.0))
                    .unwrap_or_default()
            ),
        ),
        None => (
            options.placement.policy,
            "no live-capable policy was simulated; keeping the configured one".to_string(),
        ),
    };
    Ok(TuneReport {
        jobs: runs.len(),
        prediction: evaluation.quality,
        placement,
        recommended: Recommendation {
            policy,
            predictor: best_predictor,
            config: PlacementConfig {
                policy,
                aging_rate: best_aging,
                ..options.placement.clone()
            },
            reason,
        },
        sample,
        options: Some(options.clone()),
    })
}
