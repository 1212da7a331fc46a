//! Per-key quotas from the keys file: requests and tokens per minute, requests in flight,
//! and a daily token budget that survives restarts (persisted under `--state-dir`). Keys
//! with the same name share one quota (so a key can be rotated without resetting it).
//! Limits are checked in two places: before a request costs anything ([`layer::admit`]),
//! and once its prompt is tokenized (the daily budget must cover the prompt). Tokens are
//! charged when known: the prompt at admission, the completion when the request ends.

mod bucket;
mod key;
pub mod layer;
mod limits;
pub mod store;

pub use key::{KeyQuota, Permit, Snapshot, Window, day_of};
pub use limits::{KeyLimits, Refusal, human};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{Loaded, Store, StoreError, Usage};

/// Where the quotas read the time (since the Unix epoch, UTC); tests inject their own.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The wall clock. Buckets tolerate it going back; the daily budget follows UTC dates.
pub fn system_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Every key's quota, and where daily usage is kept.
pub struct Quotas {
    keys: Vec<Arc<KeyQuota>>,
    store: Option<Store>,
    clock: Clock,
}

impl Default for Quotas {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Quotas {
    pub fn new(keys: Vec<Arc<KeyQuota>>) -> Self {
        Self {
            keys,
            store: None,
            clock: Arc::new(system_now),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> Duration {
        (self.clock)()
    }

    pub fn keys(&self) -> &[Arc<KeyQuota>] {
        &self.keys
    }

    fn budgeted(&self) -> impl Iterator<Item = &Arc<KeyQuota>> {
        self.keys
            .iter()
            .filter(|k| k.limits().daily_token_budget.is_some())
    }

    /// Keeps daily usage in `dir` and restores today's from it. A corrupt file is logged
    /// with its path (and kept aside); the budgets then start from zero.
    pub fn persist_in(mut self, dir: &Path) -> Result<Self, StoreError> {
        let store = Store::open(dir)?;
        let now = self.now();
        let path = store.path().display().to_string();
        match store.load() {
            Loaded::Missing => {
                tracing::info!(
                    path,
                    "no quota state file yet; daily budgets start from zero"
                );
            }
            Loaded::Found(saved) => {
                let mut restored = 0;
                for k in self.budgeted() {
                    if let Some(u) = saved.get(&**k.name()) {
                        k.restore(now, u.day, u.used);
                        restored += usize::from(u.day == day_of(now));
                    }
                }
                tracing::info!(path, keys = restored, "daily token usage restored");
            }
            Loaded::Corrupt { reason, kept_as } => {
                tracing::warn!(
                    path,
                    reason,
                    kept_as = kept_as.as_ref().map(|p| p.display().to_string()),
                    "the quota state file is unreadable; daily budgets start from zero today"
                );
            }
        }
        self.store = Some(store);
        Ok(self)
    }

    /// Whether a daily budget exists that `--state-dir` should keep across restarts.
    pub fn has_daily_budgets(&self) -> bool {
        self.budgeted().next().is_some()
    }

    /// Writes the state file if any usage changed since the last write (blocking I/O:
    /// call it off the async runtime). Returns whether it wrote.
    pub fn save_if_dirty(&self) -> Result<bool, StoreError> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let mut dirty = false;
        for k in &self.keys {
            dirty |= k.take_dirty();
        }
        if !dirty {
            return Ok(false);
        }
        let now = self.now();
        let usage: BTreeMap<String, Usage> = self
            .budgeted()
            .map(|k| {
                let (day, used) = k.usage(now);
                (k.name().to_string(), Usage { day, used })
            })
            .collect();
        if let Err(e) = store.save(&usage) {
            // Try again next time.
            if let Some(k) = self.keys.first() {
                k.mark_dirty();
            }
            return Err(e);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn usage_survives_a_restart_and_not_a_new_day() {
        let dir = std::env::temp_dir().join(format!("indus-quotas-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let secs = Arc::new(AtomicU64::new(20_791 * 86_400 + 3600));
        let clock: Clock = {
            let secs = secs.clone();
            Arc::new(move || Duration::from_secs(secs.load(Ordering::SeqCst)))
        };
        let limits = KeyLimits {
            daily_token_budget: Some(1000),
            ..Default::default()
        };
        let start = |clock: &Clock| {
            let k = Arc::new(KeyQuota::new("team".into(), limits, clock()));
            Quotas::new(vec![k])
                .with_clock(clock.clone())
                .persist_in(&dir)
                .unwrap()
        };
        let q = start(&clock);
        assert!(!q.save_if_dirty().unwrap());
        q.keys()[0].charge(q.now(), 700);
        assert!(q.save_if_dirty().unwrap());
        assert!(!q.save_if_dirty().unwrap());
        let q = start(&clock);
        assert_eq!(q.keys()[0].used_today(q.now()), 700);
        // The next UTC day starts from zero.
        secs.fetch_add(86_400, Ordering::SeqCst);
        let q = start(&clock);
        assert_eq!(q.keys()[0].used_today(q.now()), 0);
        // A corrupt file: start from zero (with a warning), never fail to start.
        secs.fetch_sub(86_400, Ordering::SeqCst);
        std::fs::write(dir.join(store::FILE_NAME), "not json").unwrap();
        let q = start(&clock);
        assert_eq!(q.keys()[0].used_today(q.now()), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
