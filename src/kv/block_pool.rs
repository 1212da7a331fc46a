//! The pool of physical blocks: reference counts, the free lists and the hash → block map of
//! the prefix cache.

use super::hash::BlockHash;
use std::collections::{BTreeMap, HashMap};

pub type BlockId = u32;

#[derive(Debug, Clone, Default)]
struct BlockState {
    ref_count: u32,
    hash: Option<BlockHash>,
    /// Position in the LRU list while free and cached.
    lru_tick: Option<u64>,
}

/// Free blocks come in two kinds: blank ones (no cached content, handed out first) and cached
/// ones (full blocks with a hash, kept for prefix hits and evicted least recently freed first).
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<BlockState>,
    blank: Vec<BlockId>,
    lru: BTreeMap<u64, BlockId>,
    tick: u64,
    cached: HashMap<BlockHash, BlockId>,
    evictions: u64,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        Self {
            blocks: vec![BlockState::default(); num_blocks],
            // Reversed so blocks are handed out in ascending order (easier to read in traces).
            blank: (0..num_blocks as BlockId).rev().collect(),
            lru: BTreeMap::new(),
            tick: 0,
            cached: HashMap::new(),
            evictions: 0,
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn num_free(&self) -> usize {
        self.blank.len() + self.lru.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_count
    }

    pub fn hash_of(&self, id: BlockId) -> Option<BlockHash> {
        self.blocks[id as usize].hash
    }

    /// A free block with ref count 1: a blank one if any, else the least recently freed
    /// cached one, whose hash is dropped.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let id = match self.blank.pop() {
            Some(id) => id,
            None => {
                let (_, id) = self.lru.pop_first()?;
                let state = &mut self.blocks[id as usize];
                state.lru_tick = None;
                if let Some(h) = state.hash.take()
                    && self.cached.get(&h) == Some(&id)
                {
                    self.cached.remove(&h);
                }
                self.evictions += 1;
                id
            }
        };
        let state = &mut self.blocks[id as usize];
        debug_assert_eq!(state.ref_count, 0, "allocated a block in use");
        state.ref_count = 1;
        Some(id)
    }

    /// The cached block holding exactly this prefix, if any (no reference taken).
    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Whether taking a reference on `id` removes it from the free pool.
    pub fn is_free(&self, id: BlockId) -> bool {
        self.blocks[id as usize].ref_count == 0
    }

    /// Takes one more reference on a block (a prefix hit or a fork).
    pub fn acquire(&mut self, id: BlockId) {
        let state = &mut self.blocks[id as usize];
        if state.ref_count == 0
            && let Some(tick) = state.lru_tick.take()
        {
            self.lru.remove(&tick);
        }
        state.ref_count += 1;
    }

    /// Drops one reference; at zero the block becomes free (cached if it has a hash).
    pub fn release(&mut self, id: BlockId) {
        let state = &mut self.blocks[id as usize];
        assert!(state.ref_count > 0, "double free of block {id}");
        state.ref_count -= 1;
        if state.ref_count > 0 {
            return;
        }
        if state.hash.is_some() {
            self.tick += 1;
            state.lru_tick = Some(self.tick);
            self.lru.insert(self.tick, id);
        } else {
            self.blank.push(id);
        }
    }

    /// Records that `id` now holds the full block with this hash. If another block already
    /// holds the same prefix, the first one stays the cached copy.
    pub fn set_hash(&mut self, id: BlockId, hash: BlockHash) {
        let state = &mut self.blocks[id as usize];
        if state.hash.is_some() {
            return;
        }
        state.hash = Some(hash);
        self.cached.entry(hash).or_insert(id);
    }

    /// Drops every cached hash (e.g. after weights change); in-use blocks keep their data.
    pub fn reset_prefix_cache(&mut self) {
        self.cached.clear();
        for (_, id) in std::mem::take(&mut self.lru) {
            self.blocks[id as usize].lru_tick = None;
            self.blank.push(id);
        }
        for b in &mut self.blocks {
            b.hash = None;
        }
    }

    /// Checks the pool's internal invariants; used by tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = vec![false; self.blocks.len()];
        for &id in self.blank.iter().chain(self.lru.values()) {
            if std::mem::replace(&mut seen[id as usize], true) {
                return Err(format!("block {id} is twice in the free lists"));
            }
            if self.blocks[id as usize].ref_count != 0 {
                return Err(format!("free block {id} has references"));
            }
        }
        for (id, b) in self.blocks.iter().enumerate() {
            if b.ref_count == 0 && !seen[id] {
                return Err(format!("block {id} leaked: no references and not free"));
            }
        }
        for (&h, &id) in &self.cached {
            if self.blocks[id as usize].hash != Some(h) {
                return Err(format!(
                    "cache maps a hash to block {id} which holds another"
                ));
            }
        }
        Ok(())
    }
}
