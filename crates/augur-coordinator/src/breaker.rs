//! A circuit breaker in front of etcd for API calls: while etcd is failing, the
//! API answers `Unavailable` at once instead of making every caller wait for its
//! own timeout, and lets one probe through per cool-down to notice recovery.
//!
//! **When it opens.** Every etcd call an API handler makes is recorded in a
//! sliding window of the last 10 s (ten 1 s buckets). The breaker opens when at
//! least 5 calls are in the window and at least half of them failed. Only
//! failures that say etcd is unreachable or too slow count
//! ([`StoreError::is_unavailable`]: a transport error, a timeout, no etcd
//! leader); answers — not found, a lost compare-and-swap, a failed fence, a
//! corrupt value — are successes here, since etcd did answer. One failed call
//! among healthy ones never opens it.
//!
//! **While open.** Calls are refused for a cool-down (1 s); the first call after
//! it is the probe, and the others keep being refused until the probe reports.
//! A probe that succeeds closes the breaker with an empty window; one that fails
//! opens it for another cool-down. A probe that never reports (its caller went
//! away) is replaced by a new one after a cool-down. Calls admitted before the
//! breaker opened and finishing while it is open do not change its state.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use augur_store::StoreError;
use tonic::Status;
use tracing::{info, warn};

use crate::convert::store_status;

/// Buckets of the sliding window.
const BUCKETS: usize = 10;

/// When the breaker opens and how long it stays open.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// How far back calls count.
    pub window: Duration,
    /// Fewest calls in the window before the failure share is judged.
    pub min_calls: u64,
    /// Share of failed calls in the window (0..=1) that opens the breaker.
    pub failure_ratio: f64,
    /// How long it stays open before a probe is let through.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            window: Duration::from_secs(10),
            min_calls: 5,
            failure_ratio: 0.5,
            cooldown: Duration::from_secs(1),
        }
    }
}

/// Where the breaker reads the time; tests inject their own.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Instant;
}

#[derive(Debug)]
struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What [`Breaker::check`] let through; hand it back to [`Breaker::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "record the call's outcome with Breaker::record"]
pub struct Permit {
    /// This call probes an open breaker: its outcome opens or closes it.
    probe: bool,
}

/// Breaker state shared by the API handlers.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    clock: Box<dyn Clock>,
    origin: Instant,
    state: Mutex<State>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    /// Which slice of time (since `origin`) the counts are for.
    slice: u64,
    calls: u64,
    failures: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Closed,
    /// Refusing calls until `until`; the first call after it probes.
    Open {
        until: Instant,
    },
    /// A probe is out; refusing others until it reports or `until` passes.
    Probing {
        until: Instant,
    },
}

#[derive(Debug)]
struct State {
    mode: Mode,
    buckets: [Bucket; BUCKETS],
    last_error: String,
}

impl Breaker {
    /// A breaker with the default window and threshold and this cool-down.
    pub fn new(cooldown: Duration) -> Self {
        Breaker::with_clock(
            BreakerSettings {
                cooldown,
                ..BreakerSettings::default()
            },
            Box::new(SystemClock),
        )
    }

    /// A breaker reading the time from `clock`.
    pub fn with_clock(settings: BreakerSettings, clock: Box<dyn Clock>) -> Self {
        let origin = clock.now();
        Breaker {
            settings,
            clock,
            origin,
            state: Mutex::new(State {
                mode: Mode::Closed,
                buckets: [Bucket::default(); BUCKETS],
                last_error: String::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slice of time `now` falls in.
    fn slice(&self, now: Instant) -> u64 {
        let width = (self.settings.window / BUCKETS as u32).max(Duration::from_millis(1));
        (now.saturating_duration_since(self.origin).as_nanos() / width.as_nanos()) as u64
    }

    /// Refuses the call if the breaker is open; lets one probe through after
    /// each cool-down.
    pub fn check(&self) -> Result<Permit, Status> {
        let now = self.clock.now();
        let mut state = self.lock();
        match state.mode {
            Mode::Closed => Ok(Permit { probe: false }),
            Mode::Open { until } | Mode::Probing { until } if now < until => {
                Err(Status::unavailable(format!(
                    "state store unavailable (last error: {}); retry in a moment",
                    state.last_error
                )))
            }
            Mode::Open { .. } | Mode::Probing { .. } => {
                // This call probes; others keep failing fast meanwhile.
                state.mode = Mode::Probing {
                    until: now + self.settings.cooldown,
                };
                Ok(Permit { probe: true })
            }
        }
    }

    /// Records how a call that reached for etcd went.
    pub fn record<T>(&self, permit: Permit, result: &Result<T, StoreError>) {
        let failure = match result {
            Err(e) if e.is_unavailable() => Some(e),
            _ => None,
        };
        let now = self.clock.now();
        let mut state = self.lock();
        if permit.probe {
            match failure {
                Some(e) => {
                    state.mode = Mode::Open {
                        until: now + self.settings.cooldown,
                    };
                    state.last_error = e.to_string();
                }
                None => {
                    state.mode = Mode::Closed;
                    state.buckets = [Bucket::default(); BUCKETS];
                    info!("etcd circuit breaker closed: the probe call succeeded");
                }
            }
            return;
        }
        if state.mode != Mode::Closed {
            // Admitted before the breaker opened: only the probe decides now.
            return;
        }
        let slice = self.slice(now);
        let bucket = &mut state.buckets[(slice % BUCKETS as u64) as usize];
        if bucket.slice != slice {
            *bucket = Bucket {
                slice,
                calls: 0,
                failures: 0,
            };
        }
        bucket.calls += 1;
        let Some(error) = failure else { return };
        bucket.failures += 1;
        let (calls, failures) = state
            .buckets
            .iter()
            .filter(|b| b.slice <= slice && slice - b.slice < BUCKETS as u64)
            .fold((0, 0), |(c, f), b| (c + b.calls, f + b.failures));
        if calls >= self.settings.min_calls
            && failures as f64 >= self.settings.failure_ratio * calls as f64
        {
            state.mode = Mode::Open {
                until: now + self.settings.cooldown,
            };
            state.last_error = error.to_string();
            warn!(calls, failures, error = %error, "etcd circuit breaker opened: api calls fail fast until a probe succeeds");
        }
    }

    /// Runs one etcd call of an API handler through the breaker: refused at
    /// once while open, its outcome recorded, a store error mapped to its
    /// status.
    pub async fn call<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Status> {
        let permit = self.check()?;
        let result = op.await;
        self.record(permit, &result);
        result.map_err(store_status)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A clock the test moves by hand.
    #[derive(Debug, Clone)]
    struct ManualClock {
        start: Instant,
        offset: Arc<Mutex<Duration>>,
    }

    impl ManualClock {
        fn new() -> Self {
            ManualClock {
                start: Instant::now(),
                offset: Arc::new(Mutex::new(Duration::ZERO)),
            }
        }

        fn advance(&self, by: Duration) {
            *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Instant {
            self.start + *self.offset.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    fn breaker() -> (Breaker, ManualClock) {
        let clock = ManualClock::new();
        let breaker = Breaker::with_clock(BreakerSettings::default(), Box::new(clock.clone()));
        (breaker, clock)
    }

    fn down() -> Result<(), StoreError> {
        Err(StoreError::Etcd(etcd_client::Error::GRpcStatus(
            Status::unavailable("connection refused"),
        )))
    }

    fn ok() -> Result<(), StoreError> {
        Ok(())
    }

    /// One call through the breaker: None if refused, else whether it probed.
    fn call(breaker: &Breaker, outcome: Result<(), StoreError>) -> Option<bool> {
        let permit = breaker.check().ok()?;
        breaker.record(permit, &outcome);
        Some(permit.probe)
    }

    /// Whether a call would be refused now. Only used where a call that is
    /// let through would not probe (closed, or open within its cool-down).
    fn refuses(breaker: &Breaker) -> bool {
        match breaker.check() {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable);
                true
            }
            Ok(permit) => {
                assert!(!permit.probe, "this check was meant not to probe");
                false
            }
        }
    }

    // Regression (issue 12): one failed call opened the breaker for everyone.
    #[test]
    fn a_single_failure_does_not_open_the_breaker() {
        let (breaker, _clock) = breaker();
        assert_eq!(call(&breaker, down()), Some(false));
        assert!(!refuses(&breaker));
        // Even four failures in a row are too few calls to judge.
        for _ in 0..3 {
            assert_eq!(call(&breaker, down()), Some(false));
        }
        assert!(!refuses(&breaker), "4 calls < min_calls");
    }

    #[test]
    fn opens_when_half_of_at_least_five_recent_calls_failed() {
        let (breaker, _clock) = breaker();
        for _ in 0..5 {
            call(&breaker, ok());
        }
        for _ in 0..4 {
            call(&breaker, down());
        }
        assert!(!refuses(&breaker), "4 of 9 failed");
        call(&breaker, down());
        let refused = breaker.check().expect_err("5 of 10 failed: open");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(
            refused.message().contains("connection refused"),
            "{refused}"
        );
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let (breaker, clock) = breaker();
        for _ in 0..4 {
            call(&breaker, down());
        }
        clock.advance(Duration::from_secs(11));
        call(&breaker, ok());
        // Five calls would trip it, but the first four have left the window.
        assert_eq!(call(&breaker, down()), Some(false));
        assert!(!refuses(&breaker));
    }

    #[test]
    fn answers_are_not_failures() {
        let (breaker, _clock) = breaker();
        let answers = || {
            vec![
                StoreError::Fenced { epoch: 3 },
                StoreError::Corrupt {
                    key: "/k".into(),
                    reason: "bad".into(),
                },
                StoreError::AlreadyExists {
                    key: "/k".into(),
                    reason: "taken".into(),
                },
                StoreError::Etcd(etcd_client::Error::GRpcStatus(Status::invalid_argument(
                    "etcdserver: request is too large",
                ))),
                StoreError::Etcd(etcd_client::Error::GRpcStatus(Status::not_found("gone"))),
            ]
        };
        for _ in 0..3 {
            for error in answers() {
                assert!(!error.is_unavailable(), "{error}");
                call(&breaker, Err(error));
            }
        }
        assert!(!refuses(&breaker));
        // A timeout is a failure like a refused connection.
        let timeout = StoreError::Etcd(etcd_client::Error::GRpcStatus(Status::cancelled(
            "Timeout expired",
        )));
        assert!(timeout.is_unavailable());
    }

    #[test]
    fn lets_one_probe_through_per_cooldown_while_open() {
        let (breaker, clock) = breaker();
        for _ in 0..5 {
            call(&breaker, down());
        }
        assert!(refuses(&breaker));
        clock.advance(Duration::from_millis(999));
        assert!(refuses(&breaker), "still cooling down");
        clock.advance(Duration::from_millis(1));
        let probe = breaker.check().expect("the probe");
        assert!(breaker.check().is_err(), "only one probe at a time");
        // The probe fails: open for another cool-down.
        breaker.record(probe, &down());
        clock.advance(Duration::from_millis(500));
        assert!(breaker.check().is_err());
        clock.advance(Duration::from_millis(500));
        assert_eq!(call(&breaker, ok()), Some(true), "second probe succeeds");
        // Closed, with a fresh window: one failure does not reopen it.
        assert_eq!(call(&breaker, down()), Some(false));
        assert_eq!(call(&breaker, ok()), Some(false));
    }

    #[test]
    fn late_results_of_calls_admitted_before_opening_do_not_decide() {
        let (breaker, clock) = breaker();
        let early = breaker.check().expect("closed");
        for _ in 0..5 {
            call(&breaker, down());
        }
        // A straggler that succeeds does not close the breaker...
        breaker.record(early, &ok());
        assert!(refuses(&breaker));
        // ...and a probe whose caller went away is replaced after a cool-down.
        clock.advance(Duration::from_secs(1));
        let _abandoned = breaker.check().expect("probe");
        assert!(breaker.check().is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(call(&breaker, ok()), Some(true));
        assert!(!refuses(&breaker));
    }

    #[tokio::test]
    async fn call_refuses_without_running_the_operation_while_open() {
        let (breaker, _clock) = breaker();
        for _ in 0..5 {
            call(&breaker, down());
        }
        let ran = std::sync::atomic::AtomicBool::new(false);
        let refused = breaker
            .call(async {
                ran.store(true, std::sync::atomic::Ordering::SeqCst);
                ok()
            })
            .await
            .expect_err("open");
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
