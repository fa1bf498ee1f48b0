//! Feature vectors: what the model's ridge regression sees of a job at
//! submission (the gate has its own features, see [`crate::experts`]).
//!
//! Every feature is computable from the job's own submit-time fields and the
//! causal [`History`]; nothing measured on the job itself enters. Layout:
//!
//! * per [`Template`]: whether it has history, ln of the last runtime, ln of the
//!   mean of the last two (Tsafrir), the EWMA and the mean of ln(runtime), and
//!   ln(1 + count). Missing values are imputed with the most specific broader
//!   estimate available (user, else global), so the linear model sees "no
//!   history" through the indicator rather than through a zero runtime;
//! * requested time (ln, imputed) and the user's typical runtime/requested ratio
//!   applied to it, requested CPU, memory and slots (log scale);
//! * hour of day (sin, cos) and weekend, from the submit time (UTC);
//! * the global mean of ln(runtime);
//! * numeric submitter hints chosen at training time ([`FeatureSchema`]),
//!   `asinh`-scaled, with a presence indicator each.
//!
//! All values are in log-seconds or small ranges; the model standardises them.

use augur_core::RunRecord;
use serde::{Deserialize, Serialize};

use crate::history::{History, Template, MIN_RUNTIME_S};

/// ln(runtime) assumed before any history exists: one minute.
pub const PRIOR_LN_RUNTIME: f64 = 4.094_344_562_222_1; // ln(60)

/// Features per template.
const PER_TEMPLATE: usize = 6;

/// Number of features that do not depend on the schema.
pub const BASE_FEATURES: usize = Template::ALL.len() * PER_TEMPLATE + 11;

/// The schema-dependent part of the feature vector: which submitter hints the
/// model uses (chosen from the training records).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureSchema {
    pub hint_keys: Vec<String>,
}

impl FeatureSchema {
    /// Hints present in at least `min_share` of `records`, most frequent first,
    /// at most `max_hints`.
    pub fn from_records(records: &[RunRecord], min_share: f64, max_hints: usize) -> Self {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for record in records {
            for key in record.hints.keys() {
                *counts.entry(key.as_str()).or_default() += 1;
            }
        }
        let threshold = (records.len() as f64 * min_share).max(1.0);
        let mut keys: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|(_, n)| *n as f64 >= threshold)
            .collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        FeatureSchema {
            hint_keys: keys
                .into_iter()
                .take(max_hints)
                .map(|(k, _)| k.to_string())
                .collect(),
        }
    }

    /// Length of a full feature vector.
    pub fn len(&self) -> usize {
        BASE_FEATURES + 2 * self.hint_keys.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Names of all features, in order (for reports and model files).
    pub fn names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.len());
        for template in Template::ALL {
            for part in ["has", "last1", "last2", "ewma", "mean", "log_count"] {
                names.push(format!("{}.{part}", template.name()));
            }
        }
        for name in [
            "requested_time.has",
            "requested_time.ln",
            "requested_time.user_ratio",
            "cpu.ln",
            "memory.ln",
            "slots.ln",
            "hour.sin",
            "hour.cos",
            "weekend",
            "global.mean",
            "history.log_count",
        ] {
            names.push(name.to_string());
        }
        for key in &self.hint_keys {
            names.push(format!("hint.{key}.has"));
            names.push(format!("hint.{key}.value"));
        }
        names
    }

    /// Appends the hint features of `job` to `out`.
    fn push_hints(&self, job: &RunRecord, out: &mut Vec<f64>) {
        for key in &self.hint_keys {
            match job.hints.get(key).filter(|v| v.is_finite()) {
                Some(v) => {
                    out.push(1.0);
                    out.push(v.asinh());
                }
                None => {
                    out.push(0.0);
                    out.push(0.0);
                }
            }
        }
    }
}

/// How much history stands behind a job's features (the cold-start test).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coverage {
    /// Most runs behind any of the job's templates (0: nothing similar ran).
    pub max_count: u64,
    /// The most specific template with any runs (`User` counts last).
    pub specific: Option<Template>,
}

/// The full feature vector of `job` under `schema`, written into `out`
/// (cleared first). Returns the job's history coverage.
pub fn features(
    history: &History,
    schema: &FeatureSchema,
    job: &RunRecord,
    out: &mut Vec<f64>,
) -> Coverage {
    out.clear();
    let coverage = base_features(history, job, out);
    schema.push_hints(job, out);
    coverage
}

/// The schema-independent features of `job`, appended to `out`.
pub fn base_features(history: &History, job: &RunRecord, out: &mut Vec<f64>) -> Coverage {
    let global_ln = history.global().mean_ln().unwrap_or(PRIOR_LN_RUNTIME);
    let user = history.stats(Template::User, job);
    let user_ln = user.and_then(|s| s.mean_ln()).unwrap_or(global_ln);
    let mut coverage = Coverage {
        max_count: 0,
        specific: None,
    };
    for template in Template::ALL {
        let stats = history.stats(template, job);
        // Broader estimate for imputation: the user's mean, unless this is the
        // user template itself or a template without a user.
        let impute = match template {
            Template::User | Template::Class => global_ln,
            _ => user_ln,
        };
        match stats {
            Some(s) => {
                if coverage.specific.is_none() && template != Template::User {
                    coverage.specific = Some(template);
                }
                coverage.max_count = coverage.max_count.max(s.count);
                out.push(1.0);
                out.push(s.last1().map(f64::ln).unwrap_or(impute));
                out.push(s.last2_mean().map(f64::ln).unwrap_or(impute));
                out.push(s.ewma_ln);
                out.push(s.mean_ln().unwrap_or(impute));
                out.push((1.0 + s.count as f64).ln());
            }
            None => {
                out.extend_from_slice(&[0.0, impute, impute, impute, impute, 0.0]);
            }
        }
    }
    if coverage.specific.is_none() && user.is_some() {
        coverage.specific = Some(Template::User);
    }

    let requested_ln = job
        .requested_time_s
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(|r| r.max(MIN_RUNTIME_S).ln());
    match requested_ln {
        Some(r) => {
            let ratio = user
                .filter(|s| s.ratio_count > 0)
                .map(|s| s.ratio_ewma_ln)
                .unwrap_or(user_ln - r)
                .min(0.0);
            out.extend_from_slice(&[1.0, r, r + ratio]);
        }
        None => out.extend_from_slice(&[0.0, user_ln, user_ln]),
    }
    out.push((1.0 + job.requested_cpu_millis as f64 / 1000.0).ln());
    out.push((1.0 + job.requested_memory_bytes as f64 / (1u64 << 20) as f64).ln());
    out.push((job.requested_slots.max(1) as f64).ln());

    let seconds = job.submitted_at_ms.div_euclid(1000);
    let hour = seconds.rem_euclid(86_400) as f64 / 3600.0;
    let angle = hour / 24.0 * std::f64::consts::TAU;
    out.push(angle.sin());
    out.push(angle.cos());
    // 1970-01-01 was a Thursday: day 0 → weekday 3 (Monday = 0).
    let weekday = (seconds.div_euclid(86_400) + 3).rem_euclid(7);
    out.push(if weekday >= 5 { 1.0 } else { 0.0 });
    out.push(global_ln);
    out.push((1.0 + history.len() as f64).ln());
    coverage
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record;

    #[test]
    fn vector_length_matches_names() {
        let mut history = History::new();
        history.observe(&record(1, "alice", "sim", 10.0));
        let mut job = record(2, "alice", "sim", 0.0);
        job.hints.insert("rows".into(), 1e6);
        let schema = FeatureSchema {
            hint_keys: vec!["rows".into(), "absent".into()],
        };
        let mut out = Vec::new();
        let coverage = features(&history, &schema, &job, &mut out);
        assert_eq!(out.len(), schema.len());
        assert_eq!(schema.names().len(), schema.len());
        assert!(out.iter().all(|v| v.is_finite()));
        assert_eq!(coverage.specific, Some(Template::UserClass));
        assert_eq!(coverage.max_count, 1);
    }

    #[test]
    fn schema_keeps_frequent_hints() {
        let mut records: Vec<RunRecord> = (0..10).map(|i| record(i, "u", "c", 5.0)).collect();
        for r in records.iter_mut().take(6) {
            r.hints.insert("rows".into(), 1.0);
        }
        records[0].hints.insert("rare".into(), 1.0);
        let schema = FeatureSchema::from_records(&records, 0.2, 4);
        assert_eq!(schema.hint_keys, vec!["rows".to_string()]);
    }
}
