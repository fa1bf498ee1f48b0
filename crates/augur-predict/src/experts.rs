//! Candidate estimates ("experts") and the features of the gate that picks one.
//!
//! Runtimes repeat: a user's next job often runs almost exactly as long as one
//! of their recent similar jobs, and otherwise very differently. An estimate
//! that *averages* candidates lands between the modes and misses both, which is
//! why a plain regression of ln(runtime) loses to the mean of the last two runs
//! on the fraction of jobs within 2x. So the model *selects*: every template
//! with history proposes its last runtime, the mean of its last two, and its
//! ratio-scaled requested time; the ridge regression proposes its estimate;
//! and the requested time and the global mean are always there. A per-candidate
//! linear model (the gate, fitted with linfa) scores how likely each candidate
//! is to be within 2x of the truth, from how that candidate has been doing
//! lately (causal EWMAs of its error and hit rate), how much history it has,
//! how stable the recent runtimes are, and how it compares with the request;
//! the best-scored candidate is the prediction, blended in log space with a
//! runner-up that scores almost as well and proposes something within 4x
//! ([`select_ln`]).

use augur_core::RunRecord;

use crate::features::PRIOR_LN_RUNTIME;
use crate::history::{Expert, History, Stats, Template, MIN_RUNTIME_S};

/// Gate features per candidate.
pub const GATE_FEATURES: usize = COVER_SPECIFIC + 1;

/// Index of the product of the candidate's recent hit rate and its consensus
/// (a track record counts for more when others agree).
const HIT_X_CONSENSUS: usize = 12 + LN_BINS.len();
/// Index of the candidate's slow hit rate (a longer memory than the recent
/// hit rate).
const SLOW_HIT: usize = HIT_X_CONSENSUS + 1;
/// Index of the share of the candidate's own template's recent runtimes
/// within 2x of the candidate (how often the recent past landed near it).
const COVER_OWN: usize = SLOW_HIT + 1;
/// Index of the same share over the job's most specific user template
/// (user+class, else user).
const COVER_SPECIFIC: usize = COVER_OWN + 1;

/// Upper bounds (ln seconds) of the bins of the candidate's value: 10 s, 1 min,
/// 10 min, 1 h, 6 h; the last bin is open. A linear score over bins lets each
/// kind's trust depend on the runtime range non-linearly.
const LN_BINS: [f64; 5] = [
    std::f64::consts::LN_10,
    4.094_345,
    6.396_930,
    8.188_689,
    9.980_449,
];

/// Kinds of candidates: one per (template, expert), then the ridge estimate,
/// the requested time and the global mean.
pub const CANDIDATE_KINDS: usize = Template::ALL.len() * Expert::ALL.len() + 3;

/// Index of the ridge candidate.
pub const RIDGE: usize = Template::ALL.len() * Expert::ALL.len();
const REQUESTED: usize = RIDGE + 1;
const GLOBAL: usize = RIDGE + 2;

/// Index of the consensus feature (share of the other candidates within 2x of
/// this one) and, after it, of "has the smallest recent error".
const CONSENSUS: usize = 8;

/// "Agree closely": within 25% (ln 1.25).
const TIGHT: f64 = 0.223_143_551;

/// Error assumed for an expert with no track record (ln units).
const UNKNOWN_ERROR: f64 = 2.0;
/// Hit rate assumed for an expert with no track record.
const UNKNOWN_HIT: f64 = 0.4;

/// Names of the candidate kinds, in index order.
pub fn candidate_names() -> Vec<String> {
    let mut names = Vec::with_capacity(CANDIDATE_KINDS);
    for template in Template::ALL {
        for expert in Expert::ALL {
            names.push(format!("{}.{}", template.name(), expert.name()));
        }
    }
    names.extend(["ridge", "requested_time", "global_mean"].map(String::from));
    names
}

/// One candidate estimate for a job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Index into the candidate kinds.
    pub kind: usize,
    /// Proposed ln(runtime on a speed-1 worker).
    pub ln: f64,
    pub gate: [f64; GATE_FEATURES],
}

fn requested_ln(job: &RunRecord) -> Option<f64> {
    job.requested_time_s
        .filter(|r| r.is_finite() && *r > 0.0)
        .map(|r| r.max(MIN_RUNTIME_S).ln())
}

/// Gate features: bias, recent error, recent hit rate, ln(1+count), spread of
/// the last two runs, whether a request is known, the candidate's distance
/// below the request, its distance from the ridge estimate, and the bin of
/// its value.
fn gate(
    error: f64,
    hit: f64,
    count: u64,
    spread: f64,
    requested: Option<f64>,
    ln: f64,
    ridge_ln: f64,
) -> [f64; GATE_FEATURES] {
    let (has_request, below) = match requested {
        Some(r) => (1.0, (r - ln).clamp(0.0, 10.0)),
        None => (0.0, 0.0),
    };
    let mut out = [0.0; GATE_FEATURES];
    out[..8].copy_from_slice(&[
        1.0,
        error.min(6.0),
        hit,
        (1.0 + count as f64).ln(),
        spread.min(6.0),
        has_request,
        below,
        (ln - ridge_ln).abs().min(6.0),
    ]);
    // One-hot bin of the value, the first bin left out (the bias covers it).
    let bin = LN_BINS.iter().take_while(|b| ln > **b).count();
    if bin > 0 {
        out[CONSENSUS + 4 + bin - 1] = 1.0;
    }
    out
}

/// Every candidate for `job`, given the ridge's estimate `ridge_ln`, into `out`
/// (cleared first).
pub fn candidates(history: &History, job: &RunRecord, ridge_ln: f64, out: &mut Vec<Candidate>) {
    out.clear();
    let requested = requested_ln(job);
    let specific = history
        .stats(Template::UserClass, job)
        .or_else(|| history.stats(Template::User, job))
        .map(Stats::recent_lns);
    for (t, template) in Template::ALL.into_iter().enumerate() {
        let Some(stats) = history.stats(template, job) else {
            continue;
        };
        let recent = stats.recent_lns();
        let spread = if stats.count >= 2 {
            (stats.last[0].ln() - stats.last[1].ln()).abs()
        } else {
            UNKNOWN_ERROR
        };
        for expert in Expert::ALL {
            let Some(ln) = stats.estimate_ln(expert, job.requested_time_s) else {
                continue;
            };
            let score = stats.experts[expert as usize];
            let (error, hit, slow) = if score.count > 0 {
                (score.error_ewma, score.hit_ewma, score.hit_slow)
            } else {
                (UNKNOWN_ERROR, UNKNOWN_HIT, UNKNOWN_HIT)
            };
            let mut features = gate(error, hit, stats.count, spread, requested, ln, ridge_ln);
            features[SLOW_HIT] = slow;
            features[COVER_OWN] = recent.share_near(ln);
            out.push(Candidate {
                kind: t * Expert::ALL.len() + expert as usize,
                ln,
                gate: features,
            });
        }
    }
    let count = history.len();
    out.push(Candidate {
        kind: RIDGE,
        ln: ridge_ln,
        gate: gate(
            UNKNOWN_ERROR,
            UNKNOWN_HIT,
            count,
            0.0,
            requested,
            ridge_ln,
            ridge_ln,
        ),
    });
    if let Some(r) = requested {
        out.push(Candidate {
            kind: REQUESTED,
            ln: r,
            gate: gate(
                UNKNOWN_ERROR,
                UNKNOWN_HIT,
                count,
                0.0,
                requested,
                r,
                ridge_ln,
            ),
        });
    }
    let global = history.global().mean_ln().unwrap_or(PRIOR_LN_RUNTIME);
    out.push(Candidate {
        kind: GLOBAL,
        ln: global,
        gate: gate(
            UNKNOWN_ERROR,
            UNKNOWN_HIT,
            count,
            0.0,
            requested,
            global,
            ridge_ln,
        ),
    });
    // Consensus: runtimes cluster, so a candidate that others agree with is
    // likelier to be the mode.
    let n = out.len();
    for c in out.iter_mut() {
        c.gate[COVER_SPECIFIC] = specific.map_or(0.0, |r| r.share_near(c.ln));
        if c.kind >= RIDGE {
            c.gate[COVER_OWN] = c.gate[COVER_SPECIFIC];
        }
    }
    let min_error = out.iter().map(|c| c.gate[1]).fold(f64::INFINITY, f64::min);
    for i in 0..n {
        let ln = out[i].ln;
        let agree = out
            .iter()
            .filter(|c| (c.ln - ln).abs() <= std::f64::consts::LN_2)
            .count();
        out[i].gate[CONSENSUS] = agree.saturating_sub(1) as f64 / (n - 1).max(1) as f64;
        out[i].gate[CONSENSUS + 1] = if out[i].gate[1] <= min_error {
            1.0
        } else {
            0.0
        };
        let tight = out.iter().filter(|c| (c.ln - ln).abs() <= TIGHT).count();
        out[i].gate[CONSENSUS + 2] = tight.saturating_sub(1) as f64 / (n - 1).max(1) as f64;
        out[i].gate[CONSENSUS + 3] = (n as f64).ln();
        out[i].gate[HIT_X_CONSENSUS] = out[i].gate[2] * out[i].gate[CONSENSUS];
    }
}

/// Each candidate with its gate score (`weights[kind]` · gate features);
/// candidates of kinds without weights are left out.
fn scored<'w, 'c>(
    weights: &'w [Vec<f64>],
    cands: &'c [Candidate],
) -> impl Iterator<Item = (&'c Candidate, f64)> + use<'w, 'c> {
    cands.iter().filter_map(|c| {
        let w = weights.get(c.kind)?;
        Some((c, w.iter().zip(&c.gate).map(|(a, b)| a * b).sum()))
    })
}

/// The candidate the gate scores highest (`weights[kind]` · gate features);
/// ties go to the earlier (more specific) candidate. `None` only if `cands`
/// is empty.
pub fn select<'a>(weights: &[Vec<f64>], cands: &'a [Candidate]) -> Option<&'a Candidate> {
    let mut best: Option<(&Candidate, f64)> = None;
    for (c, score) in scored(weights, cands) {
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((c, score));
        }
    }
    best.map(|(c, _)| c)
}

/// Largest score gap at which the runner-up is blended in.
const BLEND_MARGIN: f64 = 0.15;
/// Largest distance (ln units: a factor of four) of a blended runner-up.
const BLEND_SPAN: f64 = 2.0 * std::f64::consts::LN_2;

/// The prediction from the scored candidates: the best one's value, or, when
/// the runner-up scores almost as well and proposes something within a
/// factor of four, the two blended in log space.
pub fn select_ln(weights: &[Vec<f64>], cands: &[Candidate]) -> Option<(f64, usize)> {
    let mut best: Option<(&Candidate, f64)> = None;
    let mut second: Option<(&Candidate, f64)> = None;
    for (c, score) in scored(weights, cands) {
        if best.is_none_or(|(_, s)| score > s) {
            second = best;
            best = Some((c, score));
        } else if second.is_none_or(|(_, s)| score > s) {
            second = Some((c, score));
        }
    }
    let (b, bs) = best?;
    match second {
        Some((s, ss)) if bs - ss <= BLEND_MARGIN && (b.ln - s.ln).abs() <= BLEND_SPAN => {
            // Equal scores: the midpoint; the further apart, the nearer the best.
            let wb = 0.5 + 0.5 * (bs - ss) / BLEND_MARGIN;
            Some((wb * b.ln + (1.0 - wb) * s.ln, b.kind))
        }
        _ => Some((b.ln, b.kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record;

    #[test]
    fn candidates_cover_templates_and_measure_consensus() {
        let mut history = History::new();
        for i in 0..3 {
            history.observe(&record(i, "ann", "etl", 100.0));
        }
        let mut cands = Vec::new();
        candidates(
            &history,
            &record(9, "ann", "etl", 0.0),
            100f64.ln(),
            &mut cands,
        );
        assert_eq!(candidate_names().len(), CANDIDATE_KINDS);
        assert!(cands.iter().any(|c| c.kind == RIDGE));
        assert!(cands.iter().any(|c| c.kind == GLOBAL));
        // Every history candidate says 100 s: all agree with each other.
        let last2 = Template::User as usize * Expert::ALL.len() + Expert::Last2 as usize;
        let c = cands.iter().find(|c| c.kind == last2).expect("user last2");
        assert!((c.ln - 100f64.ln()).abs() < 1e-9);
        assert!(c.gate[CONSENSUS] > 0.5, "{:?}", c.gate);
        // The gate picks the best-scored candidate.
        let mut weights = vec![vec![0.0; GATE_FEATURES]; CANDIDATE_KINDS];
        weights[GLOBAL][0] = 1.0;
        assert_eq!(select(&weights, &cands).map(|c| c.kind), Some(GLOBAL));
    }

    #[test]
    fn cover_counts_recent_runs_within_two_x() {
        let mut history = History::new();
        for (i, runtime) in [100.0, 150.0, 5000.0, 60.0].into_iter().enumerate() {
            history.observe(&record(i as i64, "ann", "etl", runtime));
        }
        let job = record(9, "ann", "etl", 0.0);
        let stats = history.stats(Template::UserClass, &job);
        let cover =
            |stats: Option<&Stats>, ln: f64| stats.map_or(0.0, |s| s.recent_lns().share_near(ln));
        // 100 s: 100, 150 and 60 are within 2x; 5000 is not.
        assert!((cover(stats, 100f64.ln()) - 0.75).abs() < 1e-9);
        assert!((cover(stats, 5000f64.ln()) - 0.25).abs() < 1e-9);
        assert_eq!(cover(None, 1.0), 0.0);
        // Every candidate carries the share over the job's user+class runs.
        let mut cands = Vec::new();
        candidates(&history, &job, 100f64.ln(), &mut cands);
        for c in &cands {
            assert!((c.gate[COVER_SPECIFIC] - cover(stats, c.ln)).abs() < 1e-12);
        }
    }

    fn scored(kind: usize, ln: f64, score: f64) -> (Candidate, Vec<f64>) {
        let mut gate = [0.0; GATE_FEATURES];
        gate[0] = 1.0;
        let mut w = vec![0.0; GATE_FEATURES];
        w[0] = score;
        (Candidate { kind, ln, gate }, w)
    }

    #[test]
    fn close_runner_up_is_blended_far_one_is_not() {
        let (a, wa) = scored(0, 4.0, 0.8);
        let (b, wb) = scored(1, 5.0, 0.8);
        let (c, wc) = scored(2, 9.0, 0.79);
        let weights = vec![wa, wb, wc];
        // Two equally scored candidates within 4x: their log-space midpoint.
        let (ln, kind) = select_ln(&weights, &[a, b]).expect("candidates");
        assert!((ln - 4.5).abs() < 1e-9, "{ln}");
        assert_eq!(kind, 0);
        // A runner-up more than 4x away is ignored.
        let (ln, _) = select_ln(&weights, &[a, c]).expect("candidates");
        assert!((ln - 4.0).abs() < 1e-9, "{ln}");
        // A clearly better candidate is taken as it is.
        let weights = vec![weights[0].clone(), vec![0.2; 1], weights[2].clone()];
        let (ln, kind) = select_ln(&weights, &[a, b]).expect("candidates");
        assert_eq!((ln, kind), (4.0, 0));
        assert!(select_ln(&weights, &[]).is_none());
    }
}
