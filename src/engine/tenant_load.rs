//! Sequences each tenant has in the engine, for fair admission. The waiting queue has one
//! bound for everyone (`--max-waiting-requests`), so one tenant's flood could fill it and
//! turn every other tenant away with 429s. With this count a full queue still admits a
//! tenant that holds less than its fair share of the engine's capacity — capacity divided
//! among the tenants that have sequences in it — so the queue can grow past its bound by
//! at most the capacity again, and only for tenants below their share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
pub(super) struct TenantLoad {
    by_tenant: Mutex<HashMap<Arc<str>, usize>>,
}

/// A tenant's sequences, given back when dropped (the request's output stream ends).
#[derive(Debug)]
pub(super) struct TenantSlot {
    load: Arc<TenantLoad>,
    tenant: Arc<str>,
    n: usize,
}

impl Drop for TenantSlot {
    fn drop(&mut self) {
        let mut m = self.load.lock();
        if let Some(held) = m.get_mut(&self.tenant) {
            *held = held.saturating_sub(self.n);
            if *held == 0 {
                m.remove(&self.tenant);
            }
        }
    }
}

impl TenantLoad {
    /// Counts are plain numbers: a panic elsewhere leaves them usable.
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.by_tenant.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `tenant` holds less than its share of `capacity` sequences, counting itself
    /// among the tenants present.
    pub(super) fn below_fair_share(&self, tenant: &Arc<str>, capacity: usize) -> bool {
        let m = self.lock();
        let held = m.get(tenant).copied().unwrap_or(0);
        let tenants = m.len() + usize::from(!m.contains_key(tenant));
        held < capacity / tenants.max(1)
    }

    /// Records `n` more sequences of `tenant` until the slot is dropped.
    pub(super) fn take(self: &Arc<Self>, tenant: &Arc<str>, n: usize) -> TenantSlot {
        *self.lock().entry(tenant.clone()).or_insert(0) += n;
        TenantSlot {
            load: self.clone(),
            tenant: tenant.clone(),
            n,
        }
    }

    #[cfg(test)]
    fn held(&self, tenant: &str) -> usize {
        self.lock().get(tenant).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_light_tenant_is_below_its_share_while_a_flood_is_not() {
        let load = Arc::new(TenantLoad::default());
        let (flood, light): (Arc<str>, Arc<str>) = (Arc::from("flood"), Arc::from("light"));
        let held = load.take(&flood, 90);
        // Alone, the flood may use the whole capacity of 100.
        assert!(load.below_fair_share(&flood, 100));
        // A newcomer counts itself: two tenants, shares of 50.
        assert!(load.below_fair_share(&light, 100));
        let l = load.take(&light, 10);
        assert!(!load.below_fair_share(&flood, 100));
        assert!(load.below_fair_share(&light, 100));
        drop(held);
        assert_eq!(load.held("flood"), 0);
        assert_eq!(load.held("light"), 10);
        drop(l);
        assert!(
            load.lock().is_empty(),
            "tenants with nothing left are forgotten"
        );
    }
}
