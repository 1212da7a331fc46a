//! One key's quota state: its two buckets, its requests in flight and what it used today.
//! Every method takes the time (since the Unix epoch, UTC) from its caller, so the logic is
//! tested with an injected clock; a short mutex per key keeps keys from contending.

use super::bucket::Bucket;
use super::limits::{KeyLimits, Refusal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

const DAY_SECS: u64 = 86_400;

/// The UTC day `now` falls on (days since 1970-01-01).
pub fn day_of(now: Duration) -> u64 {
    now.as_secs() / DAY_SECS
}

/// Time left until the next UTC midnight.
pub fn until_midnight(now: Duration) -> Duration {
    Duration::from_secs((day_of(now) + 1) * DAY_SECS).saturating_sub(now)
}

pub struct KeyQuota {
    name: Arc<str>,
    limits: KeyLimits,
    state: Mutex<State>,
    /// Today's usage changed since it was last persisted.
    dirty: AtomicBool,
}

struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    in_flight: u64,
    day: u64,
    used_today: u64,
}

impl State {
    /// A new UTC day starts with nothing used.
    fn roll(&mut self, now: Duration) {
        let today = day_of(now);
        if today != self.day {
            self.day = today;
            self.used_today = 0;
        }
    }
}

/// One limit's standing, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Until the window is back to its full limit.
    pub reset: Duration,
}

/// Every limit a key has, as it stands now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
    pub daily: Option<Window>,
}

/// A request counted against `max_concurrent_requests` until this is dropped.
#[derive(Debug)]
pub struct Permit {
    quota: Arc<KeyQuota>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.quota.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

impl std::fmt::Debug for KeyQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyQuota")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl KeyQuota {
    pub fn new(name: Arc<str>, limits: KeyLimits, now: Duration) -> Self {
        Self {
            name,
            limits,
            state: Mutex::new(State {
                requests: limits
                    .requests_per_minute
                    .map(|n| Bucket::per_minute(n, now)),
                tokens: limits.tokens_per_minute.map(|n| Bucket::per_minute(n, now)),
                in_flight: 0,
                day: day_of(now),
                used_today: 0,
            }),
            dirty: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn limits(&self) -> KeyLimits {
        self.limits
    }

    /// The state stays usable after a panic elsewhere: counters are plain numbers.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request before it costs anything: refused while the key has as many in
    /// flight as it may, its tokens per minute are overdrawn, its daily budget is spent, or
    /// it has started as many requests this minute as it may. Only an admitted request is
    /// counted against requests per minute.
    pub fn admit(self: &Arc<Self>, now: Duration) -> Result<Permit, Refusal> {
        let mut s = self.lock();
        s.roll(now);
        if let Some(limit) = self.limits.max_concurrent_requests
            && s.in_flight >= limit
        {
            return Err(Refusal::Concurrency { limit });
        }
        if let Some(b) = s.tokens.as_mut()
            && b.level(now) < 1.0
        {
            return Err(Refusal::Tokens {
                limit: b.capacity(),
                retry_after: b.wait_for(now, 1.0),
            });
        }
        if let Some(budget) = self.limits.daily_token_budget
            && s.used_today >= budget
        {
            return Err(Refusal::DailyBudget {
                budget,
                used: s.used_today,
                needed: None,
                retry_after: until_midnight(now),
            });
        }
        if let Some(b) = s.requests.as_mut()
            && !b.try_take(now, 1.0)
        {
            return Err(Refusal::Requests {
                limit: b.capacity(),
                retry_after: b.wait_for(now, 1.0),
            });
        }
        s.in_flight += 1;
        Ok(Permit {
            quota: self.clone(),
        })
    }

    /// Refuses a prompt of `tokens` tokens that the rest of today's budget cannot pay for.
    pub fn check_prompt(&self, now: Duration, tokens: u64) -> Result<(), Refusal> {
        let mut s = self.lock();
        s.roll(now);
        match self.limits.daily_token_budget {
            Some(budget) if s.used_today.saturating_add(tokens) > budget => {
                Err(Refusal::DailyBudget {
                    budget,
                    used: s.used_today,
                    needed: Some(tokens),
                    retry_after: until_midnight(now),
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts `tokens` used (a prompt at admission, a completion when it ends).
    pub fn charge(&self, now: Duration, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let mut s = self.lock();
        s.roll(now);
        if let Some(b) = s.tokens.as_mut() {
            b.charge(now, tokens as f64);
        }
        s.used_today = s.used_today.saturating_add(tokens);
        // Only daily budgets are persisted.
        if self.limits.daily_token_budget.is_some() {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Tokens used on `now`'s UTC day.
    pub fn used_today(&self, now: Duration) -> u64 {
        let mut s = self.lock();
        s.roll(now);
        s.used_today
    }

    /// Requests of this key in flight.
    pub fn in_flight(&self) -> u64 {
        self.lock().in_flight
    }

    /// Today's usage for the state file: (UTC day, tokens used).
    pub fn usage(&self, now: Duration) -> (u64, u64) {
        let mut s = self.lock();
        s.roll(now);
        (s.day, s.used_today)
    }

    /// Usage read back from the state file; ignored unless it is of `now`'s day.
    pub fn restore(&self, now: Duration, day: u64, used: u64) {
        let mut s = self.lock();
        s.roll(now);
        if day == s.day {
            s.used_today = s.used_today.max(used);
        }
    }

    /// Asks for the next persist (after a failed one).
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Whether usage changed since the last call (the persister's cue).
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    /// Every limit's standing, for the response headers.
    pub fn snapshot(&self, now: Duration) -> Snapshot {
        let mut s = self.lock();
        s.roll(now);
        let window = |b: &mut Bucket| {
            let level = b.level(now);
            Window {
                limit: b.capacity(),
                remaining: level.max(0.0).floor() as u64,
                reset: b.until_full(now),
            }
        };
        let daily = self.limits.daily_token_budget.map(|budget| Window {
            limit: budget,
            remaining: budget.saturating_sub(s.used_today),
            reset: until_midnight(now),
        });
        Snapshot {
            requests: s.requests.as_mut().map(window),
            tokens: s.tokens.as_mut().map(window),
            daily,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Noon, 2026-12-04 UTC.
    const NOON: Duration = Duration::from_secs(20_791 * DAY_SECS + 12 * 3600);

    fn quota(limits: KeyLimits) -> Arc<KeyQuota> {
        Arc::new(KeyQuota::new("team".into(), limits, NOON))
    }

    fn at(secs: f64) -> Duration {
        NOON + Duration::from_secs_f64(secs)
    }

    #[test]
    fn requests_per_minute() {
        let q = quota(KeyLimits {
            requests_per_minute: Some(2),
            ..Default::default()
        });
        let _a = q.admit(at(0.0)).unwrap();
        let _b = q.admit(at(0.0)).unwrap();
        let e = q.admit(at(1.0)).unwrap_err();
        assert_eq!(e.reason(), "requests_per_minute");
        // One request per 30 s comes back; one second of it has passed.
        assert!(
            matches!(e.retry_after_secs(), Some(29 | 30)),
            "{:?}",
            e.retry_after_secs()
        );
        let snap = q.snapshot(at(1.0)).requests.unwrap();
        assert_eq!((snap.limit, snap.remaining), (2, 0));
        assert!(q.admit(at(30.0)).is_ok());
        assert!(q.admit(at(30.0)).is_err());
    }

    #[test]
    fn concurrency_is_held_until_the_permit_drops() {
        let q = quota(KeyLimits {
            max_concurrent_requests: Some(1),
            requests_per_minute: Some(100),
            ..Default::default()
        });
        let p = q.admit(at(0.0)).unwrap();
        let e = q.admit(at(0.0)).unwrap_err();
        assert_eq!(e, Refusal::Concurrency { limit: 1 });
        // A refused request does not count against requests per minute.
        assert_eq!(q.snapshot(at(0.0)).requests.unwrap().remaining, 99);
        drop(p);
        assert_eq!(q.in_flight(), 0);
        assert!(q.admit(at(0.0)).is_ok());
    }

    #[test]
    fn tokens_per_minute_counts_prompt_and_completion() {
        let q = quota(KeyLimits {
            tokens_per_minute: Some(600),
            ..Default::default()
        });
        let p = q.admit(at(0.0)).unwrap();
        q.charge(at(0.0), 100);
        q.charge(at(1.0), 550);
        drop(p);
        let snap = q.snapshot(at(1.0)).tokens.unwrap();
        // 600 + 10 refilled − 650 = −40: overdrawn.
        assert_eq!(snap.remaining, 0);
        let e = q.admit(at(1.0)).unwrap_err();
        assert_eq!(e.reason(), "tokens_per_minute");
        // 41 tokens at 10 per second.
        assert_eq!(e.retry_after_secs(), Some(5));
        assert!(q.admit(at(5.2)).is_ok());
    }

    #[test]
    fn daily_budget_resets_at_utc_midnight() {
        let q = quota(KeyLimits {
            daily_token_budget: Some(100),
            ..Default::default()
        });
        q.check_prompt(at(0.0), 100).unwrap();
        q.charge(at(0.0), 60);
        let e = q.check_prompt(at(0.0), 41).unwrap_err();
        assert_eq!(e.kind(), "insufficient_quota");
        q.charge(at(0.0), 40);
        let e = q.admit(at(0.0)).unwrap_err();
        assert_eq!(e.reason(), "daily_token_budget");
        // Twelve hours to midnight.
        assert_eq!(e.retry_after_secs(), Some(12 * 3600));
        let snap = q.snapshot(at(0.0)).daily.unwrap();
        assert_eq!((snap.limit, snap.remaining), (100, 0));
        let midnight = at(12.0 * 3600.0);
        assert!(q.admit(midnight).is_ok());
        assert_eq!(q.used_today(midnight), 0);
    }

    #[test]
    fn restore_keeps_only_today() {
        let q = quota(KeyLimits {
            daily_token_budget: Some(100),
            ..Default::default()
        });
        q.restore(at(0.0), day_of(NOON) - 1, 90);
        assert_eq!(q.used_today(at(0.0)), 0);
        q.restore(at(0.0), day_of(NOON), 90);
        assert_eq!(q.used_today(at(0.0)), 90);
        assert!(!q.take_dirty());
        q.charge(at(0.0), 1);
        assert!(q.take_dirty());
        assert!(!q.take_dirty());
        assert_eq!(q.usage(at(0.0)), (day_of(NOON), 91));
    }

    #[test]
    fn an_unlimited_key_reports_no_windows() {
        let q = quota(KeyLimits::default());
        for _ in 0..1000 {
            std::mem::forget(q.admit(at(0.0)).unwrap());
        }
        assert_eq!(q.snapshot(at(0.0)), Snapshot::default());
    }
}
