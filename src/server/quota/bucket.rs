//! A token bucket: holds up to `capacity` units and refills at `capacity` per minute, so a
//! key may burst up to its per-minute limit and then goes on at that rate. The level may go
//! below zero — tokens are charged once a request's cost is known (prompt at admission,
//! completion at the end), so one large request can overdraw, and the key then waits until
//! the debt is repaid. Time is passed in, never read here, so tests need no sleeps.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    at: Duration,
}

impl Bucket {
    /// A full bucket of `per_minute` units at time `now`.
    pub fn per_minute(per_minute: u64, now: Duration) -> Self {
        let capacity = per_minute.max(1) as f64;
        Self {
            capacity,
            per_sec: capacity / 60.0,
            level: capacity,
            at: now,
        }
    }

    /// Adds what accrued since the last call. A clock that went backwards adds nothing.
    fn refill(&mut self, now: Duration) {
        if now > self.at {
            let dt = (now - self.at).as_secs_f64();
            self.level = (self.level + dt * self.per_sec).min(self.capacity);
            self.at = now;
        }
    }

    /// Units available now (negative while overdrawn).
    pub fn level(&mut self, now: Duration) -> f64 {
        self.refill(now);
        self.level
    }

    /// Takes `units` whatever the level (it may go negative).
    pub fn charge(&mut self, now: Duration, units: f64) {
        self.refill(now);
        self.level -= units;
    }

    /// Takes `units` only if that many are available.
    pub fn try_take(&mut self, now: Duration, units: f64) -> bool {
        self.refill(now);
        if self.level >= units {
            self.level -= units;
            true
        } else {
            false
        }
    }

    /// How long until `units` are available (zero if they are now).
    pub fn wait_for(&mut self, now: Duration, units: f64) -> Duration {
        let level = self.level(now);
        secs((units.min(self.capacity) - level) / self.per_sec)
    }

    /// How long until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub fn until_full(&mut self, now: Duration) -> Duration {
        let level = self.level(now);
        secs((self.capacity - level) / self.per_sec)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_000_000);

    #[test]
    fn bursts_to_capacity_then_refills_at_the_rate() {
        let mut b = Bucket::per_minute(60, T0);
        for _ in 0..60 {
            assert!(b.try_take(T0, 1.0));
        }
        assert!(!b.try_take(T0, 1.0));
        assert_eq!(b.wait_for(T0, 1.0), Duration::from_secs(1));
        assert!(!b.try_take(T0 + Duration::from_millis(999), 1.0));
        assert!(b.try_take(T0 + Duration::from_secs(1), 1.0));
        assert_eq!(
            b.until_full(T0 + Duration::from_secs(1)),
            Duration::from_secs(60)
        );
        // Never above capacity, however long it rests.
        assert_eq!(b.level(T0 + Duration::from_secs(3600)), 60.0);
    }

    #[test]
    fn charges_may_overdraw_and_are_repaid() {
        let mut b = Bucket::per_minute(600, T0);
        b.charge(T0, 900.0);
        assert_eq!(b.level(T0), -300.0);
        // 10 units per second: back to 1 after 30.1 s.
        assert_eq!(b.wait_for(T0, 1.0), Duration::from_secs_f64(30.1));
        assert!(b.level(T0 + Duration::from_secs(30)) == 0.0);
        // A wait is never longer than for a full bucket's worth (from 0 now).
        assert_eq!(b.wait_for(T0, 10_000.0), Duration::from_secs(60));
    }

    #[test]
    fn a_clock_going_back_adds_nothing() {
        let mut b = Bucket::per_minute(60, T0);
        assert!(b.try_take(T0, 60.0));
        assert_eq!(b.level(T0 - Duration::from_secs(10)), 0.0);
        assert_eq!(b.level(T0 + Duration::from_secs(1)), 1.0);
    }
}
