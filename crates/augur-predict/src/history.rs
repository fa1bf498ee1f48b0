//! Causal run history: per-template statistics of past runtimes.
//!
//! A *template* (Smith, Foster & Taylor, JPDC 2004) is a set of job attributes —
//! user, user+class, class, user+requested resources, … — and two jobs with the
//! same values for a template's attributes are "similar" under it. For every
//! template value seen so far, [`History`] keeps the count, the last five runtimes
//! (Tsafrir's predictor), an exponentially weighted mean and the plain mean of
//! ln(runtime), the mean ln ratio of runtime to requested time, and a running
//! score of each of the template's own estimates ([`Expert`]). These are the
//! target encodings of the high-cardinality categories (users, classes): they are
//! computed from history only.
//!
//! **Causality** is the caller's duty and the whole point: a record may be
//! [`History::observe`]d only once its job has finished (its `finished_at_ms` is
//! not after the moment a prediction is made). [`crate::replay::causal_order`]
//! gives that order for offline replays.
//!
//! Runtimes are normalised to a speed-1 worker (runtime × worker speed) and
//! floored at [`MIN_RUNTIME_S`] (10 ms), so ln(runtime) is finite and jobs run
//! on workers of different speeds are comparable.

use std::collections::HashMap;

use augur_core::RunRecord;
use serde::{Deserialize, Serialize};

/// Shortest runtime the model distinguishes, in seconds: about what starting a
/// process costs. (It was 1 s, the resolution of SWF traces, which made every
/// sub-second job look alike live; the SWF importer now reads runs shorter
/// than its resolution as 1 s instead.)
pub const MIN_RUNTIME_S: f64 = 0.01;

/// Runtimes remembered per template value.
pub const RECENT: usize = 5;

/// Smoothing factor of the per-template EWMA of ln(runtime).
const EWMA_ALPHA: f64 = 0.3;
/// Smoothing factor of the slow hit-rate EWMA of each expert.
const SLOW_ALPHA: f64 = 0.08;

/// The templates, in feature order. Each names the attributes that make two
/// jobs similar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    User,
    UserClass,
    Class,
    UserCommand,
    /// Same user, same requested time and CPU: a resubmission of "the same" job.
    UserRequest,
    UserCpu,
    UserClassCpu,
    /// Same user and same non-user, non-hint labels (SWF: group, queue, partition).
    UserLabels,
    /// Same class and requested CPU, any user.
    ClassCpu,
    /// Same user, class (if any) and requested CPU, submitted in the same part
    /// of the week (one of four six-hour spans of a weekday, or a weekend):
    /// night batches run longer than daytime tests.
    UserCpuShift,
}

impl Template {
    pub const ALL: [Template; 10] = [
        Template::User,
        Template::UserClass,
        Template::Class,
        Template::UserCommand,
        Template::UserRequest,
        Template::UserCpu,
        Template::UserClassCpu,
        Template::UserLabels,
        Template::ClassCpu,
        Template::UserCpuShift,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Template::User => "user",
            Template::UserClass => "user_class",
            Template::Class => "class",
            Template::UserCommand => "user_command",
            Template::UserRequest => "user_request",
            Template::UserCpu => "user_cpu",
            Template::UserClassCpu => "user_class_cpu",
            Template::UserLabels => "user_labels",
            Template::ClassCpu => "class_cpu",
            Template::UserCpuShift => "user_cpu_shift",
        }
    }

    /// The template's key for a job, or `None` when the job lacks an attribute
    /// the template needs (no user, no class, …).
    pub fn key(self, job: &RunRecord) -> Option<u64> {
        let mut h = Fnv::new(self as u8);
        let need = |s: &str| (!s.is_empty()).then_some(());
        match self {
            Template::User => {
                need(&job.user)?;
                h.str(&job.user);
            }
            Template::UserClass => {
                need(&job.user)?;
                need(&job.name)?;
                h.str(&job.user).str(&job.name);
            }
            Template::Class => {
                need(&job.name)?;
                h.str(&job.name);
            }
            Template::UserCommand => {
                need(&job.user)?;
                need(&job.command)?;
                h.str(&job.user).str(&job.command);
            }
            Template::UserRequest => {
                need(&job.user)?;
                let requested = job.requested_time_s?;
                h.str(&job.user).u64(requested.to_bits()).resources(job);
            }
            Template::UserCpu => {
                need(&job.user)?;
                h.str(&job.user).resources(job);
            }
            Template::UserClassCpu => {
                need(&job.user)?;
                need(&job.name)?;
                h.str(&job.user).str(&job.name).resources(job);
            }
            Template::UserLabels => {
                need(&job.user)?;
                h.str(&job.user);
                let mut any = false;
                for (k, v) in &job.labels {
                    if augur_core::run::USER_LABELS.contains(&k.as_str())
                        || k.starts_with(augur_core::run::HINT_LABEL_PREFIX)
                    {
                        continue;
                    }
                    any = true;
                    h.str(k).str(v);
                }
                any.then_some(())?;
            }
            Template::ClassCpu => {
                need(&job.name)?;
                h.str(&job.name).resources(job);
            }
            Template::UserCpuShift => {
                need(&job.user)?;
                h.str(&job.user)
                    .str(&job.name)
                    .resources(job)
                    .u64(job.requested_time_s.map_or(0, f64::to_bits))
                    .u64(shift(job.submitted_at_ms));
            }
        }
        Some(h.finish())
    }
}

/// The part of the week `at_ms` (UTC) falls in: 0–3 for the six-hour spans
/// of a weekday, 4 for the weekend.
fn shift(at_ms: i64) -> u64 {
    let seconds = at_ms.div_euclid(1000);
    // 1970-01-01 was a Thursday: day 0 → weekday 3 (Monday = 0).
    let weekday = (seconds.div_euclid(86_400) + 3).rem_euclid(7);
    if weekday >= 5 {
        4
    } else {
        (seconds.rem_euclid(86_400) / 21_600) as u64
    }
}

/// FNV-1a, 64 bit: stable across Rust versions and processes, so keys survive
/// serialisation (std's hasher makes no such promise).
struct Fnv(u64);

impl Fnv {
    fn new(seed: u8) -> Self {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.byte(seed);
        h
    }
    fn byte(&mut self, b: u8) {
        self.0 ^= b as u64;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn str(&mut self, s: &str) -> &mut Self {
        for b in s.bytes() {
            self.byte(b);
        }
        self.byte(0xff); // separator: ("ab","c") != ("a","bc")
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        for b in v.to_le_bytes() {
            self.byte(b);
        }
        self
    }
    /// The job's requested CPU and slots.
    fn resources(&mut self, job: &RunRecord) -> &mut Self {
        self.u64(job.requested_cpu_millis)
            .u64(job.requested_slots as u64)
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The ln of a template's recent runtimes, newest first ([`Stats::recent_lns`]).
#[derive(Clone, Copy, Debug)]
pub struct RecentLns {
    values: [f64; RECENT],
    len: usize,
}

impl RecentLns {
    pub fn as_slice(&self) -> &[f64] {
        &self.values[..self.len]
    }

    /// The recent values within 2x of `ln`.
    pub fn near(&self, ln: f64) -> impl Iterator<Item = f64> + '_ {
        self.as_slice()
            .iter()
            .copied()
            .filter(move |v| (v - ln).abs() <= std::f64::consts::LN_2)
    }

    /// Share of the recent runtimes within 2x of `ln` (0 when there are none).
    pub fn share_near(&self, ln: f64) -> f64 {
        if self.len == 0 {
            return 0.0;
        }
        self.near(ln).count() as f64 / self.len as f64
    }
}

/// Runtime statistics of the jobs that share one template value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    /// The last runtimes (seconds, speed-1), newest first; 0 = none.
    pub last: [f64; RECENT],
    /// EWMA of ln(runtime).
    pub ewma_ln: f64,
    /// Sum of ln(runtime), for the mean.
    pub sum_ln: f64,
    /// Records that had a requested time, and the EWMA of ln(runtime / requested).
    pub ratio_count: u64,
    pub ratio_ewma_ln: f64,
    /// How this template's own estimates ([`Expert`]) fared on its runs so far.
    #[serde(default)]
    pub experts: [ExpertScore; Expert::ALL.len()],
}

/// The estimates a template offers for the next similar job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expert {
    /// The newest runtime.
    Last1 = 0,
    /// The mean of the two newest runtimes (Tsafrir).
    Last2 = 1,
    /// The requested time scaled by the template's typical runtime/request ratio.
    Ratio = 2,
    /// The median of the last three runtimes: picks a mode when runs alternate.
    Median3 = 3,
    /// The median of the last five runtimes.
    Median5 = 4,
    /// The recent runtime with the most other recent runtimes within 2x of
    /// it (the newest on a tie), averaged in log space with those: the value
    /// the recent past most often landed near.
    Mode5 = 5,
}

impl Expert {
    pub const ALL: [Expert; 6] = [
        Expert::Last1,
        Expert::Last2,
        Expert::Ratio,
        Expert::Median3,
        Expert::Median5,
        Expert::Mode5,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Expert::Last1 => "last1",
            Expert::Last2 => "last2",
            Expert::Ratio => "ratio",
            Expert::Median3 => "median3",
            Expert::Median5 => "median5",
            Expert::Mode5 => "mode5",
        }
    }
}

/// Running score of one expert: EWMAs of its absolute ln error and of whether
/// it was within a factor of two (a fast and a slow one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpertScore {
    pub count: u64,
    pub error_ewma: f64,
    pub hit_ewma: f64,
    /// A slower EWMA of the hit rate (longer memory than `hit_ewma`).
    #[serde(default)]
    pub hit_slow: f64,
}

impl ExpertScore {
    fn record(&mut self, error: f64) {
        let hit = if error <= std::f64::consts::LN_2 {
            1.0
        } else {
            0.0
        };
        if self.count == 0 {
            self.error_ewma = error;
            self.hit_ewma = hit;
            self.hit_slow = hit;
        } else {
            self.hit_slow = SLOW_ALPHA * hit + (1.0 - SLOW_ALPHA) * self.hit_slow;
            self.error_ewma = EWMA_ALPHA * error + (1.0 - EWMA_ALPHA) * self.error_ewma;
            self.hit_ewma = EWMA_ALPHA * hit + (1.0 - EWMA_ALPHA) * self.hit_ewma;
        }
        self.count += 1;
    }
}

impl Stats {
    fn observe(&mut self, runtime_s: f64, requested_s: Option<f64>) {
        let ln = runtime_s.ln();
        for expert in Expert::ALL {
            if let Some(estimate) = self.estimate_ln(expert, requested_s) {
                self.experts[expert as usize].record((estimate - ln).abs());
            }
        }
        self.ewma_ln = if self.count == 0 {
            ln
        } else {
            EWMA_ALPHA * ln + (1.0 - EWMA_ALPHA) * self.ewma_ln
        };
        self.count += 1;
        self.sum_ln += ln;
        self.last.copy_within(0..RECENT - 1, 1);
        self.last[0] = runtime_s;
        if let Some(requested) = requested_s.filter(|r| r.is_finite() && *r >= MIN_RUNTIME_S) {
            let ratio = ln - requested.ln();
            self.ratio_ewma_ln = if self.ratio_count == 0 {
                ratio
            } else {
                EWMA_ALPHA * ratio + (1.0 - EWMA_ALPHA) * self.ratio_ewma_ln
            };
            self.ratio_count += 1;
        }
    }

    /// The ln-runtime `expert` proposes for a job with `requested_s`, if it can.
    pub fn estimate_ln(&self, expert: Expert, requested_s: Option<f64>) -> Option<f64> {
        match expert {
            Expert::Last1 => self.last1().map(f64::ln),
            Expert::Last2 => self.last2_mean().map(f64::ln),
            Expert::Median3 => self.recent_median(3).map(f64::ln),
            Expert::Median5 => self.recent_median(5).map(f64::ln),
            Expert::Mode5 => self.recent_mode_ln(),
            Expert::Ratio => {
                let requested = requested_s.filter(|r| r.is_finite() && *r >= MIN_RUNTIME_S)?;
                (self.ratio_count > 0)
                    .then(|| (requested.ln() + self.ratio_ewma_ln.min(0.0)).max(0.0))
            }
        }
    }

    /// ln of the recent runtimes, newest first (floored at [`MIN_RUNTIME_S`]).
    pub fn recent_lns(&self) -> RecentLns {
        let len = (self.count as usize).min(RECENT);
        let mut values = [0.0; RECENT];
        for (v, r) in values.iter_mut().zip(&self.last[..len]) {
            *v = r.max(MIN_RUNTIME_S).ln();
        }
        RecentLns { values, len }
    }

    /// See [`Expert::Mode5`].
    pub fn recent_mode_ln(&self) -> Option<f64> {
        let recent = self.recent_lns();
        let mut best: Option<(usize, f64)> = None;
        for &x in recent.as_slice() {
            let count = recent.near(x).count();
            if best.is_none_or(|(c, _)| count > c) {
                best = Some((count, x));
            }
        }
        let (count, mode) = best?;
        Some(recent.near(mode).sum::<f64>() / count as f64)
    }

    /// Median of the newest `k` runtimes (of as many as there are, up to
    /// [`RECENT`]); the upper median for an even count.
    pub fn recent_median(&self, k: usize) -> Option<f64> {
        let n = (self.count as usize).min(k).min(RECENT);
        if n == 0 {
            return None;
        }
        let mut values = [0.0; RECENT];
        values[..n].copy_from_slice(&self.last[..n]);
        values[..n].sort_by(|a, b| a.total_cmp(b));
        Some(values[n / 2])
    }

    /// Tsafrir's predictor: the mean of the last two runtimes (or the only one).
    pub fn last2_mean(&self) -> Option<f64> {
        match self.count {
            0 => None,
            1 => Some(self.last[0]),
            _ => Some((self.last[0] + self.last[1]) / 2.0),
        }
    }

    /// The newest runtime.
    pub fn last1(&self) -> Option<f64> {
        (self.count > 0).then_some(self.last[0])
    }

    pub fn mean_ln(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ln / self.count as f64)
    }
}

/// Global statistics over every observed record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GlobalStats {
    pub count: u64,
    pub sum_s: f64,
    pub sum_ln: f64,
}

impl GlobalStats {
    /// Arithmetic mean runtime, seconds.
    pub fn mean_s(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_s / self.count as f64)
    }
    /// Mean of ln(runtime).
    pub fn mean_ln(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ln / self.count as f64)
    }
}

/// The causal history: statistics per template value, built only from
/// finished runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    templates: Vec<HashMap<u64, Stats>>,
    global: GlobalStats,
    /// Largest `finished_at_ms` observed so far (for causality checks).
    latest_finish_ms: i64,
}

impl History {
    pub fn new() -> Self {
        History {
            templates: vec![HashMap::new(); Template::ALL.len()],
            global: GlobalStats::default(),
            latest_finish_ms: i64::MIN,
        }
    }

    /// Builds a history from finished records, in finish order.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a RunRecord>) -> Self {
        let mut sorted: Vec<&RunRecord> = records.into_iter().collect();
        sorted.sort_by_key(|r| r.finished_at_ms);
        let mut history = History::new();
        for record in sorted {
            history.observe(record);
        }
        history
    }

    /// Adds a finished run. Call only once the run has finished, as seen from
    /// the moment of the next prediction.
    pub fn observe(&mut self, record: &RunRecord) {
        if self.templates.len() != Template::ALL.len() {
            // A history deserialised from an older shape: start the tables over.
            self.templates = vec![HashMap::new(); Template::ALL.len()];
        }
        let runtime_s = reference_runtime_s(record);
        for (i, template) in Template::ALL.iter().enumerate() {
            if let Some(key) = template.key(record) {
                self.templates[i]
                    .entry(key)
                    .or_default()
                    .observe(runtime_s, record.requested_time_s);
            }
        }
        self.global.count += 1;
        self.global.sum_s += runtime_s;
        self.global.sum_ln += runtime_s.ln();
        self.latest_finish_ms = self.latest_finish_ms.max(record.finished_at_ms);
    }

    /// The statistics of `job`'s value of `template`, if any run shared it.
    pub fn stats(&self, template: Template, job: &RunRecord) -> Option<&Stats> {
        let key = template.key(job)?;
        self.templates
            .get(template as usize)?
            .get(&key)
            .filter(|s| s.count > 0)
    }

    pub fn global(&self) -> &GlobalStats {
        &self.global
    }

    /// Records observed so far.
    pub fn len(&self) -> u64 {
        self.global.count
    }

    pub fn is_empty(&self) -> bool {
        self.global.count == 0
    }

    /// The newest finish time observed (`i64::MIN` when empty).
    pub fn latest_finish_ms(&self) -> i64 {
        self.latest_finish_ms
    }
}

/// A record's runtime on a speed-1 worker, floored at [`MIN_RUNTIME_S`].
pub fn reference_runtime_s(record: &RunRecord) -> f64 {
    let s = record.reference_runtime_s();
    if s.is_finite() {
        s.max(MIN_RUNTIME_S)
    } else {
        MIN_RUNTIME_S
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record;

    #[test]
    fn shift_template_separates_night_from_day() {
        // Day 4 (1970-01-05) is a Monday.
        let day = 4 * 86_400_000;
        let mut night = record(1, "alice", "sim", 10.0);
        night.submitted_at_ms = day + 2 * 3_600_000;
        let mut morning = night.clone();
        morning.submitted_at_ms = day + 9 * 3_600_000;
        let mut later_night = night.clone();
        later_night.submitted_at_ms = day + 86_400_000 + 3_600_000;
        let mut saturday = night.clone();
        saturday.submitted_at_ms = day + 5 * 86_400_000 + 9 * 3_600_000;
        let key = |r: &RunRecord| Template::UserCpuShift.key(r);
        assert_eq!(key(&night), key(&later_night));
        assert_ne!(key(&night), key(&morning));
        assert_ne!(key(&morning), key(&saturday));
        assert_eq!(shift(saturday.submitted_at_ms), 4);
        assert_eq!(
            Template::ClassCpu.key(&night),
            Template::ClassCpu.key(&record(2, "bob", "sim", 1.0))
        );
    }

    #[test]
    fn templates_need_their_attributes() {
        let mut job = record(1, "alice", "sim", 10.0);
        assert!(Template::User.key(&job).is_some());
        assert!(Template::UserRequest.key(&job).is_none());
        assert!(Template::UserLabels.key(&job).is_none());
        job.requested_time_s = Some(60.0);
        assert!(Template::UserRequest.key(&job).is_some());
        job.user.clear();
        assert!(Template::User.key(&job).is_none());
        assert!(Template::Class.key(&job).is_some());
    }

    #[test]
    fn stats_keep_the_last_two_and_normalise_speed() {
        let mut history = History::new();
        let mut a = record(1, "alice", "sim", 10.0);
        a.worker_speed = 2.0;
        history.observe(&a);
        history.observe(&record(2, "alice", "sim", 40.0));
        let s = history
            .stats(Template::User, &a)
            .expect("alice has history");
        assert_eq!(s.count, 2);
        assert_eq!(s.last2_mean(), Some(30.0));
        assert_eq!(s.last1(), Some(40.0));
        assert_eq!(history.global().mean_s(), Some(30.0));
        let other = record(3, "bob", "sim", 1.0);
        assert!(history.stats(Template::User, &other).is_none());
        assert_eq!(
            history.stats(Template::Class, &other).map(|s| s.count),
            Some(2)
        );
    }

    #[test]
    fn experts_are_scored_on_each_new_run() {
        let mut history = History::new();
        for (i, runtime) in [10.0, 100.0, 10.0, 10.0].into_iter().enumerate() {
            history.observe(&record(i as i64, "alice", "sim", runtime));
        }
        let s = history
            .stats(Template::User, &record(9, "alice", "sim", 0.0))
            .expect("history");
        assert_eq!(s.recent_median(3), Some(10.0));
        assert_eq!(s.recent_median(5), Some(10.0));
        assert_eq!(s.last2_mean(), Some(10.0));
        // Last1 was scored three times (after runs 1, 2, 3) and hit once (10 → 10).
        let last1 = s.experts[Expert::Last1 as usize];
        assert_eq!(last1.count, 3);
        assert!(last1.hit_ewma > 0.0 && last1.hit_ewma < 1.0);
        assert!(s.estimate_ln(Expert::Ratio, Some(60.0)).is_none());
    }

    #[test]
    fn mode_follows_the_runtime_the_recent_past_landed_near_most() {
        let mut history = History::new();
        // Newest first: 5000, 100, 5000, 120, 90 — three runs near 100 s.
        for (i, runtime) in [90.0, 120.0, 5000.0, 100.0, 5000.0].into_iter().enumerate() {
            history.observe(&record(i as i64, "alice", "sim", runtime));
        }
        let s = history
            .stats(Template::User, &record(9, "alice", "sim", 0.0))
            .expect("history");
        let mode = s.estimate_ln(Expert::Mode5, None).expect("mode").exp();
        let expected = (90f64.ln() + 120f64.ln() + 100f64.ln()) / 3.0;
        assert!((mode.ln() - expected).abs() < 1e-9, "{mode}");
        // The last run and the last-two mean both say the long mode.
        assert_eq!(s.last1(), Some(5000.0));
        assert!(s.last2_mean().is_some_and(|m| m > 2000.0));
        // A tie between two modes goes to the newest one.
        let mut history = History::new();
        for (i, runtime) in [10.0, 1000.0].into_iter().enumerate() {
            history.observe(&record(i as i64, "bob", "sim", runtime));
        }
        let s = history
            .stats(Template::User, &record(9, "bob", "sim", 0.0))
            .expect("history");
        let mode = s.estimate_ln(Expert::Mode5, None).expect("mode").exp();
        assert!((mode - 1000.0).abs() < 1e-6, "{mode}");
    }

    #[test]
    fn history_round_trips_through_json() {
        let mut history = History::new();
        history.observe(&record(1, "alice", "sim", 10.0));
        let json = serde_json::to_string(&history).expect("serialises");
        let back: History = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, history);
    }
}
