//! Continuous batching: which sequences run this step and how many tokens each.
//!
//! The scheduler sees only token counts and block ids. Every sequence has `tokens` (prompt +
//! generated) and `num_computed` (tokens whose KV is in the cache); a step gives each
//! scheduled sequence `num_new` more. A sequence whose prompt is still being prefilled and a
//! decoding one differ only in how far behind `num_computed` is, so chunked prefill and
//! decode mix in one batch naturally.
//!
//! Policy, per step, under `max_num_batched_tokens` and `max_num_seqs`:
//! 1. running sequences first (oldest / highest priority first), each as many tokens as it
//!    needs and the budget allows; when the cache is full the newest running sequence is
//!    preempted (its blocks freed, recomputed later: its tokens are kept, so its output does
//!    not change);
//! 2. then waiting sequences — the best priority first, then round-robin across tenants
//!    (see [`wait_queue`]), each tenant's in arrival order — starting from their cached
//!    prefix, as long as blocks and budget last. No waiting sequence is admitted in a step
//!    that had to preempt for memory.
//!
//! Slots are shared fairly too: when all `max_num_seqs` are taken and the next waiting
//! tenant runs at least two sequences fewer than another, that other tenant's newest
//! sequence is preempted for it (one a step). Otherwise a tenant holding every slot with long
//! generations would make all others wait for one of its requests to end.

mod sequence;
mod wait_queue;

pub use sequence::{SeqStatus, Sequence};

use crate::kv::{KvCacheManager, SeqId};
use std::collections::HashMap;
use std::sync::Arc;
use wait_queue::WaitQueue;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub max_num_batched_tokens: usize,
    pub max_num_seqs: usize,
    /// Split long prompts across steps; without it a prompt must fit one step's budget.
    pub enable_chunked_prefill: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_batched_tokens: 2048,
            max_num_seqs: 256,
            enable_chunked_prefill: true,
        }
    }
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub id: SeqId,
    /// Tokens already in the cache; the step computes `tokens[num_computed..num_computed+num_new]`.
    pub num_computed: usize,
    pub num_new: usize,
    /// The step reaches the sequence's last known token, so its logits are sampled.
    pub samples: bool,
}

#[derive(Debug, Default)]
pub struct SchedulerOutput {
    pub seqs: Vec<ScheduledSeq>,
    pub preempted: Vec<SeqId>,
    pub num_batched_tokens: usize,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

pub struct Scheduler {
    config: SchedulerConfig,
    seqs: HashMap<SeqId, Sequence>,
    waiting: WaitQueue,
    /// Kept sorted by (priority, arrival): preemption victims come from the end.
    running: Vec<SeqId>,
    num_preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        Self {
            config,
            seqs: HashMap::new(),
            waiting: WaitQueue::default(),
            running: Vec::new(),
            num_preemptions: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn get(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    /// Queues a sequence. A sequence that already holds blocks (a forked n > 1 choice) keeps
    /// its `num_computed`.
    pub fn add(&mut self, seq: Sequence) {
        self.waiting.insert(&seq.tenant, seq.wait_key());
        self.seqs.insert(seq.id, seq);
    }

    /// Removes a sequence (finished or aborted) and frees its blocks.
    pub fn remove(&mut self, id: SeqId, kv: &mut KvCacheManager) -> Option<Sequence> {
        let seq = self.seqs.remove(&id)?;
        self.waiting.remove(&seq.tenant, &seq.wait_key());
        self.running.retain(|&r| r != id);
        kv.free(id);
        Some(seq)
    }

    /// Appends a sampled token to a sequence.
    pub fn append_token(&mut self, id: SeqId, token: u32) {
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.tokens.push(token);
        }
    }

    /// Decides this step's batch and reserves its KV slots.
    pub fn schedule(&mut self, kv: &mut KvCacheManager) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let mut budget = self.config.max_num_batched_tokens;
        self.share_slots(kv, &mut out);
        let mut short_of_memory = false;

        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let num_new = (seq.tokens.len() - seq.num_computed).min(budget);
            let scheduled = loop {
                let seq = &self.seqs[&id];
                if kv
                    .allocate(id, &seq.tokens, seq.num_computed, num_new, &[])
                    .is_ok()
                {
                    break true;
                }
                let victim = *self.running.last().expect("running is not empty");
                self.preempt(victim, kv);
                out.preempted.push(victim);
                short_of_memory = true;
                if victim == id {
                    break false;
                }
            };
            if !scheduled {
                break;
            }
            out.seqs.push(self.scheduled(id, num_new));
            budget -= num_new;
            i += 1;
        }

        if !short_of_memory {
            let mut running_by_tenant = self.running_by_tenant();
            while budget > 0 && self.running.len() < self.config.max_num_seqs {
                let Some((key, tenant)) = self
                    .waiting
                    .first(|t| running_by_tenant.get(t).copied().unwrap_or(0))
                else {
                    break;
                };
                let id = key.2;
                let seq = &self.seqs[&id];
                let holds_blocks = kv.has_blocks(id);
                let hits = if holds_blocks {
                    Vec::new()
                } else {
                    kv.cached_prefix(&seq.tokens)
                };
                let num_computed = if holds_blocks {
                    seq.num_computed
                } else {
                    hits.len() * kv.block_size()
                };
                let remaining = seq.tokens.len() - num_computed;
                let num_new = if self.config.enable_chunked_prefill {
                    remaining.min(budget)
                } else if remaining <= budget {
                    remaining
                } else {
                    break;
                };
                if kv
                    .allocate(id, &seq.tokens, num_computed, num_new, &hits)
                    .is_err()
                {
                    break;
                }
                let seq = self.seqs.get_mut(&id).expect("waiting sequence exists");
                if !seq.prefix_lookup_recorded {
                    seq.prefix_lookup_recorded = true;
                    kv.record_prefix_lookup(seq.tokens.len(), hits.len() * kv.block_size());
                }
                seq.num_computed = num_computed;
                seq.status = SeqStatus::Running;
                self.waiting.admit(&tenant, &key);
                *running_by_tenant.entry(tenant).or_default() += 1;
                let pos = self
                    .running
                    .partition_point(|r| self.seqs[r].wait_key() < key);
                self.running.insert(pos, id);
                out.seqs.push(self.scheduled(id, num_new));
                budget -= num_new;
            }
        }
        out.num_batched_tokens = self.config.max_num_batched_tokens - budget;
        out
    }

    fn running_by_tenant(&self) -> HashMap<Arc<str>, usize> {
        let mut counts: HashMap<Arc<str>, usize> = HashMap::new();
        for id in &self.running {
            *counts.entry(self.seqs[id].tenant.clone()).or_default() += 1;
        }
        counts
    }

    /// With every slot taken, frees one for the next waiting tenant when another tenant runs
    /// at least two sequences more than it: that tenant's newest sequence of no better
    /// priority is preempted. The gap of two makes it converge (a tenant never preempts its
    /// way above another) and the waiting order then admits the poorer tenant first.
    fn share_slots(&mut self, kv: &mut KvCacheManager, out: &mut SchedulerOutput) {
        if self.running.len() < self.config.max_num_seqs {
            return;
        }
        let counts = self.running_by_tenant();
        let count = |t: &str| counts.get(t).copied().unwrap_or(0);
        let Some((head, tenant)) = self.waiting.first(count) else {
            return;
        };
        let mine = count(&tenant);
        let victim = self.running.iter().rev().copied().find(|r| {
            let seq = &self.seqs[r];
            count(&seq.tenant) > mine + 1 && seq.priority >= head.0
        });
        if let Some(victim) = victim {
            self.preempt(victim, kv);
            out.preempted.push(victim);
        }
    }

    fn scheduled(&self, id: SeqId, num_new: usize) -> ScheduledSeq {
        let seq = &self.seqs[&id];
        ScheduledSeq {
            id,
            num_computed: seq.num_computed,
            num_new,
            samples: seq.num_computed + num_new == seq.tokens.len(),
        }
    }

    /// Records that a step computed what it was given.
    pub fn step_done(&mut self, out: &SchedulerOutput) {
        for s in &out.seqs {
            if let Some(seq) = self.seqs.get_mut(&s.id) {
                seq.num_computed = s.num_computed + s.num_new;
            }
        }
    }

    /// Preemption by recompute: drop the KV, keep the tokens, requeue.
    fn preempt(&mut self, id: SeqId, kv: &mut KvCacheManager) {
        kv.free(id);
        self.running.retain(|&r| r != id);
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.num_computed = 0;
            seq.num_preemptions += 1;
            seq.status = SeqStatus::Waiting;
            self.waiting.insert(&seq.tenant, seq.wait_key());
        }
        self.num_preemptions += 1;
    }
}

#[cfg(test)]
mod tests;
