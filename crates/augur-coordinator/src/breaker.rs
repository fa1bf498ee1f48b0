//! A circuit breaker in front of etcd for API calls: while etcd is failing, the
//! API answers `Unavailable` at once instead of making every caller wait for its
//! own timeout, and lets one probe through per cool-down to notice recovery.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;

/// Breaker state shared by the API handlers.
#[derive(Debug)]
pub struct Breaker {
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set while open: calls fail fast until then (one probe after).
    open_until: Option<Instant>,
    last_error: String,
}

impl Breaker {
    pub fn new(cooldown: Duration) -> Self {
        Breaker {
            cooldown,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses the call if the breaker is open; lets one probe through after
    /// each cool-down.
    pub fn check(&self) -> Result<(), Status> {
        let mut state = self.lock();
        match state.open_until {
            Some(until) if Instant::now() < until => Err(Status::unavailable(format!(
                "state store unavailable (last error: {}); retry in a moment",
                state.last_error
            ))),
            Some(_) => {
                // Half-open: this call probes; others keep failing fast meanwhile.
                state.open_until = Some(Instant::now() + self.cooldown);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records how a call that reached etcd went.
    pub fn record<T>(&self, result: &Result<T, augur_store::StoreError>) {
        let mut state = self.lock();
        match result {
            Err(e) if e.is_retryable() => {
                state.open_until = Some(Instant::now() + self.cooldown);
                state.last_error = e.to_string();
            }
            _ => state.open_until = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_and_closes_on_success() {
        let breaker = Breaker::new(Duration::from_millis(50));
        assert!(breaker.check().is_ok());
        let failure: Result<(), _> = Err(augur_store::StoreError::WatchEnded {
            prefix: "/x".into(),
            reason: "down".into(),
        });
        breaker.record(&failure);
        let refused = breaker.check().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        std::thread::sleep(Duration::from_millis(60));
        assert!(breaker.check().is_ok(), "one probe after the cool-down");
        assert!(breaker.check().is_err(), "only one probe");
        breaker.record(&Ok::<(), augur_store::StoreError>(()));
        assert!(breaker.check().is_ok());
    }
}
