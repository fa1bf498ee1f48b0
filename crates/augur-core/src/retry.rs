//! Retry policy: how many attempts a job gets and how long it waits between them.
//! Backoff is exponential, capped, with "equal jitter" (half fixed, half random)
//! so retries of many jobs failing together spread out but never retry at once.

use serde::{Deserialize, Serialize};

/// How a job is retried after a failure of its own (non-zero exit, timeout).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts for failures of the job itself; 1 means no retry.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
    /// Fraction of the backoff that is randomised (0..=1).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (1 = first retry), given a uniform
    /// random sample in `[0, 1)`. Pure, so it is testable with fixed samples.
    pub fn backoff_ms(&self, retry: u32, sample: f64) -> u64 {
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let raw = self.initial_backoff_ms as f64 * self.multiplier.powi(exponent);
        let capped = raw.min(self.max_backoff_ms as f64);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let sample = sample.clamp(0.0, 1.0);
        let value = capped * (1.0 - jitter) + capped * jitter * sample;
        value.round() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff_ms(1, 0.3), 1_000);
        assert_eq!(p.backoff_ms(2, 0.3), 2_000);
        assert_eq!(p.backoff_ms(3, 0.3), 4_000);
        assert_eq!(p.backoff_ms(20, 0.3), 60_000);
    }

    proptest! {
        #[test]
        fn backoff_stays_within_jitter_band(retry in 1u32..200, sample in 0.0f64..1.0) {
            let p = RetryPolicy::default();
            let b = p.backoff_ms(retry, sample);
            prop_assert!(b <= p.max_backoff_ms);
            let floor = (p.initial_backoff_ms as f64 * (1.0 - p.jitter)).floor() as u64;
            prop_assert!(b >= floor);
        }
    }
}
