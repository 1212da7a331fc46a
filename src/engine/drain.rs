//! How long the waiting queue takes to drain, for a refused client's `Retry-After`: the
//! sequences ahead of it over the rate sequences have been finishing, jittered so refused
//! clients do not all come back in the same second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest and longest wait suggested.
const MIN_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Rate samples closer together than this are merged (a burst of refusals sees one rate).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Finished-sequence rate, smoothed over the samples refusals take.
pub struct DrainRate {
    state: Mutex<Sample>,
}

struct Sample {
    at: Instant,
    finished: u64,
    /// Sequences per second; `None` until measured.
    rate: Option<f64>,
}

impl DrainRate {
    pub fn new(finished: u64) -> Self {
        Self {
            state: Mutex::new(Sample {
                at: Instant::now(),
                finished,
                rate: None,
            }),
        }
    }

    /// Updates the rate with the engine's finished count and returns it (sequences/s).
    fn rate(&self, finished: u64) -> Option<f64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let dt = s.at.elapsed();
        if dt >= SAMPLE_EVERY {
            let now = finished.saturating_sub(s.finished) as f64 / dt.as_secs_f64();
            s.rate = Some(match s.rate {
                Some(r) => 0.5 * r + 0.5 * now,
                None => now,
            });
            s.at = Instant::now();
            s.finished = finished;
        }
        s.rate
    }

    /// When a client refused with `queued` sequences ahead of it should retry: the time
    /// the queue takes to drain at the measured rate (at most `MAX_RETRY`; with no rate
    /// yet, `queued / running_slots` seconds), times a random factor in [0.75, 1.25].
    pub fn retry_after(&self, queued: usize, running_slots: usize, finished: u64) -> Duration {
        let secs = match self.rate(finished) {
            Some(r) if r > 0.0 => queued as f64 / r,
            _ => queued as f64 / running_slots.max(1) as f64,
        };
        let jittered = secs * rand::random_range(0.75..=1.25);
        Duration::from_secs_f64(jittered.clamp(MIN_RETRY.as_secs_f64(), MAX_RETRY.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_stays_in_bounds_and_grows_with_the_queue() {
        let d = DrainRate::new(0);
        let short = d.retry_after(1, 256, 0);
        assert!(short >= MIN_RETRY && short <= MAX_RETRY);
        let long = d.retry_after(1_000_000, 1, 0);
        assert_eq!(long, MAX_RETRY);
        let mid = d.retry_after(40, 4, 0);
        assert!(mid >= Duration::from_secs_f64(7.5) && mid <= Duration::from_secs_f64(12.5));
    }
}
