//! The waiting queue, fair across tenants. Each tenant (an opaque name the server passes
//! with a request: its API key's name) has its own queue in (priority, arrival) order; the
//! next sequence is the best priority among the tenants' heads, among equal heads the
//! tenant with the fewest running sequences, and then the tenant served least recently. A
//! flood from one tenant then never goes ahead of a quieter tenant's request.

use super::sequence::WaitKey;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct WaitQueue {
    by_tenant: HashMap<Arc<str>, BTreeSet<WaitKey>>,
    /// Tenants with waiting sequences, least recently served first.
    order: VecDeque<Arc<str>>,
    len: usize,
}

impl WaitQueue {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn insert(&mut self, tenant: &Arc<str>, key: WaitKey) {
        let q = self.by_tenant.entry(tenant.clone()).or_default();
        if q.is_empty() {
            self.order.push_back(tenant.clone());
        }
        if q.insert(key) {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, tenant: &Arc<str>, key: &WaitKey) {
        let Some(q) = self.by_tenant.get_mut(tenant) else {
            return;
        };
        if q.remove(key) {
            self.len -= 1;
        }
        if q.is_empty() {
            self.by_tenant.remove(tenant);
            self.order.retain(|t| t != tenant);
        }
    }

    /// The sequence to admit next, with its tenant; `running(tenant)` is how many sequences
    /// that tenant has running now.
    pub fn first(&self, running: impl Fn(&str) -> usize) -> Option<(WaitKey, Arc<str>)> {
        let mut best: Option<((i32, usize), WaitKey, &Arc<str>)> = None;
        for t in &self.order {
            let Some(&head) = self.by_tenant.get(t).and_then(|q| q.first()) else {
                continue;
            };
            let rank = (head.0, running(t));
            // Strictly better rank only: ties keep the least recently served tenant.
            if best.is_none_or(|(b, _, _)| rank < b) {
                best = Some((rank, head, t));
            }
        }
        best.map(|(_, k, t)| (k, t.clone()))
    }

    /// Removes `key` (just admitted) and moves its tenant to the back of the order.
    pub fn admit(&mut self, tenant: &Arc<str>, key: &WaitKey) {
        self.remove(tenant, key);
        if let Some(pos) = self.order.iter().position(|t| t == tenant)
            && let Some(t) = self.order.remove(pos)
        {
            self.order.push_back(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::SeqId;

    #[test]
    fn tenants_take_turns_and_priority_still_wins() {
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let mut q = WaitQueue::default();
        for i in 0..100 {
            q.insert(&a, (0, i, i as SeqId));
        }
        q.insert(&b, (0, 100, 100));
        q.insert(&b, (0, 101, 101));
        let mut served = Vec::new();
        for _ in 0..4 {
            let (k, t) = q.first(|_| 0).unwrap();
            q.admit(&t, &k);
            served.push((t.to_string(), k.2));
        }
        assert_eq!(
            served,
            [
                ("a".into(), 0),
                ("b".into(), 100),
                ("a".into(), 1),
                ("b".into(), 101)
            ]
        );
        // A better priority goes first whatever the turn.
        q.insert(&b, (-1, 200, 200));
        assert_eq!(q.first(|_| 0).unwrap().0.2, 200);
        assert_eq!(q.len(), 99);
    }

    #[test]
    fn the_tenant_running_fewer_sequences_goes_first() {
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        let mut q = WaitQueue::default();
        q.insert(&a, (0, 0, 0));
        q.insert(&b, (0, 1, 1));
        // `a` is first in turn, but `b` runs nothing while `a` runs three.
        let running = |t: &str| if t == "a" { 3 } else { 0 };
        assert_eq!(q.first(running).unwrap().1, b);
        // Priority still beats the running count.
        q.insert(&a, (-1, 2, 2));
        assert_eq!(q.first(running).unwrap().0.2, 2);
    }
}
