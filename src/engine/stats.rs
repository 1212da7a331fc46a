//! Gauges the engine publishes after every step, for /metrics and /ready. Written only by
//! the engine thread; readers see a consistent-enough snapshot without taking any lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct EngineStats {
    alive: AtomicBool,
    running: AtomicU64,
    waiting: AtomicU64,
    free_blocks: AtomicU64,
    total_blocks: AtomicU64,
    prefix_queries: AtomicU64,
    prefix_hits: AtomicU64,
    preemptions: AtomicU64,
    steps: AtomicU64,
    finished: AtomicU64,
}

/// A copy of the gauges at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsSnapshot {
    pub alive: bool,
    pub running: u64,
    pub waiting: u64,
    pub free_blocks: u64,
    pub total_blocks: u64,
    pub prefix_queries: u64,
    pub prefix_hits: u64,
    pub preemptions: u64,
    pub steps: u64,
    /// Sequences that ran to their end (for the queue's drain rate).
    pub finished: u64,
}

impl StatsSnapshot {
    /// Fraction of KV blocks in use by live sequences.
    pub fn kv_usage(&self) -> f64 {
        if self.total_blocks == 0 {
            0.0
        } else {
            1.0 - self.free_blocks as f64 / self.total_blocks as f64
        }
    }
}

pub(crate) struct StatsUpdate {
    pub running: usize,
    pub waiting: usize,
    pub free_blocks: usize,
    pub total_blocks: usize,
    pub prefix: (u64, u64),
    pub preemptions: u64,
}

impl EngineStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            alive: self.alive.load(Relaxed),
            running: self.running.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            free_blocks: self.free_blocks.load(Relaxed),
            total_blocks: self.total_blocks.load(Relaxed),
            prefix_queries: self.prefix_queries.load(Relaxed),
            prefix_hits: self.prefix_hits.load(Relaxed),
            preemptions: self.preemptions.load(Relaxed),
            steps: self.steps.load(Relaxed),
            finished: self.finished.load(Relaxed),
        }
    }

    pub(crate) fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Relaxed);
    }

    pub(crate) fn publish(&self, u: StatsUpdate) {
        self.running.store(u.running as u64, Relaxed);
        self.waiting.store(u.waiting as u64, Relaxed);
        self.free_blocks.store(u.free_blocks as u64, Relaxed);
        self.total_blocks.store(u.total_blocks as u64, Relaxed);
        self.prefix_queries.store(u.prefix.0, Relaxed);
        self.prefix_hits.store(u.prefix.1, Relaxed);
        self.preemptions.store(u.preemptions, Relaxed);
    }

    /// Counts a sequence that finished.
    pub(crate) fn count_finished(&self) {
        self.finished.fetch_add(1, Relaxed);
    }

    /// Counts a step; returns its 1-based number.
    pub(crate) fn count_step(&self) -> u64 {
        self.steps.fetch_add(1, Relaxed) + 1
    }
}
