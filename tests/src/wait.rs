//! Waiting on conditions. Tests never sleep and hope: they poll a condition until a
//! generous deadline and fail with the last thing they observed.

use std::fmt::Display;
use std::thread;
use std::time::{Duration, Instant};

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Ok`, or panics after `timeout` naming `what`
/// and the last observation (`check`'s most recent `Err`).
pub fn poll_until<T>(
    timeout: Duration,
    what: impl Display,
    check: impl FnMut() -> Result<T, String>,
) -> T {
    poll_every(POLL_INTERVAL, timeout, what, check)
}

/// [`poll_until`] with its own interval, for checks that are expensive to make.
pub fn poll_every<T>(
    interval: Duration,
    timeout: Duration,
    what: impl Display,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}")
            }
            Err(_) => thread::sleep(interval),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut calls = 0;
        let value = poll_until(Duration::from_secs(5), "three calls", || {
            calls += 1;
            if calls == 3 {
                Ok(calls)
            } else {
                Err(format!("{calls} calls"))
            }
        });
        assert_eq!(value, 3);
    }

    #[test]
    #[should_panic(expected = "last observed: never")]
    fn panics_with_the_last_observation() {
        poll_until::<()>(Duration::from_millis(50), "nothing", || Err("never".into()));
    }
}
