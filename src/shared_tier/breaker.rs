//! A circuit breaker for the shared tier: after `TRIPS_AFTER` failures in a row it opens
//! and calls are skipped for `OPEN_FOR`; then one call may try (half-open), and a success
//! closes it again while a failure opens it for another period.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const TRIPS_AFTER: u32 = 5;
const OPEN_FOR: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Breaker {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failures: u32,
    /// While open: until when.
    open_until: Option<Instant>,
}

impl Breaker {
    /// Whether a call may go to the store now. Past the open period one call is let
    /// through; the next ones wait for its result (the period is extended meanwhile).
    pub(super) fn allows(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.open_until {
            None => true,
            Some(until) if Instant::now() >= until => {
                state.open_until = Some(Instant::now() + OPEN_FOR);
                true
            }
            Some(_) => false,
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open_until
            .is_some()
    }

    pub(super) fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failures = 0;
        state.open_until = None;
    }

    pub(super) fn failed(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failures += 1;
        if state.failures >= TRIPS_AFTER {
            state.open_until = Some(Instant::now() + OPEN_FOR);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_closes_on_success() {
        let breaker = Breaker::default();
        for _ in 0..TRIPS_AFTER - 1 {
            breaker.failed();
            assert!(breaker.allows());
        }
        breaker.failed();
        assert!(!breaker.allows());
        assert!(breaker.is_open());
        breaker.succeeded();
        assert!(breaker.allows() && !breaker.is_open());
    }
}
