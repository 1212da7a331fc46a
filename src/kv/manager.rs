//! Per-sequence block tables on top of the [`BlockPool`], with prefix-cache lookups.
//! The scheduler asks it only "does this fit" and "which blocks"; hashing and eviction stay
//! here.

use super::block_pool::{BlockId, BlockPool};
use super::hash::{BlockHash, hash_block_tokens};
use std::collections::HashMap;

pub type SeqId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("not enough free KV-cache blocks")]
    OutOfBlocks,
}

#[derive(Debug, Default)]
struct SeqBlocks {
    blocks: Vec<BlockId>,
    /// Leading full blocks whose hash is registered.
    num_hashed: usize,
    last_hash: Option<BlockHash>,
}

#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
    tables: HashMap<SeqId, SeqBlocks>,
    prefix_queries: u64,
    prefix_hits: u64,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self {
            pool: BlockPool::new(num_blocks),
            block_size,
            prefix_caching,
            tables: HashMap::new(),
            prefix_queries: 0,
            prefix_hits: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_total_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    /// Fraction of blocks referenced by live sequences (cached free blocks count as free).
    pub fn usage(&self) -> f64 {
        let total = self.num_total_blocks();
        if total == 0 {
            return 0.0;
        }
        1.0 - self.num_free_blocks() as f64 / total as f64
    }

    /// Tokens looked up in and found in the prefix cache, since start.
    pub fn prefix_cache_stats(&self) -> (u64, u64) {
        (self.prefix_queries, self.prefix_hits)
    }

    pub fn evictions(&self) -> u64 {
        self.pool.evictions()
    }

    /// Tokens one sequence could hold if it had the whole cache.
    pub fn capacity_tokens(&self) -> usize {
        self.num_total_blocks() * self.block_size
    }

    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.tables
            .get(&seq)
            .map(|t| t.blocks.as_slice())
            .unwrap_or(&[])
    }

    pub fn has_blocks(&self, seq: SeqId) -> bool {
        self.tables.contains_key(&seq)
    }

    /// Cached blocks holding a prefix of `tokens`. At most `(len - 1) / block_size` blocks,
    /// so at least one token is always computed and yields logits.
    pub fn cached_prefix(&self, tokens: &[u32]) -> Vec<BlockId> {
        if !self.prefix_caching || tokens.len() < 2 {
            return Vec::new();
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut parent = None;
        let mut hits = Vec::new();
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let h = hash_block_tokens(parent, chunk);
            match self.pool.lookup(h) {
                Some(id) => hits.push(id),
                None => break,
            }
            parent = Some(h);
        }
        hits
    }

    /// Counts one admitted request's lookup for the hit-rate metric.
    pub fn record_prefix_lookup(&mut self, queried_tokens: usize, hit_tokens: usize) {
        if self.prefix_caching {
            self.prefix_queries += queried_tokens as u64;
            self.prefix_hits += hit_tokens as u64;
        }
    }

    /// Makes room for `num_new` more tokens of `seq` after `num_computed` already in its
    /// table (or in `hits`, the cached prefix blocks it starts from). All or nothing: on
    /// failure nothing changes. `tokens` are the sequence's known tokens, used to hash the
    /// blocks that this step fills.
    pub fn allocate(
        &mut self,
        seq: SeqId,
        tokens: &[u32],
        num_computed: usize,
        num_new: usize,
        hits: &[BlockId],
    ) -> Result<(), AllocationError> {
        let bs = self.block_size;
        let have = self.tables.get(&seq).map_or(0, |t| t.blocks.len()) + hits.len();
        let need = (num_computed + num_new).div_ceil(bs).saturating_sub(have);
        let hits_now_free = hits.iter().filter(|&&b| self.pool.is_free(b)).count();
        if need > self.pool.num_free() - hits_now_free {
            return Err(AllocationError::OutOfBlocks);
        }
        let table = self.tables.entry(seq).or_default();
        debug_assert!(hits.is_empty() || table.blocks.is_empty());
        for &b in hits {
            self.pool.acquire(b);
            table.blocks.push(b);
        }
        for _ in 0..need {
            let b = self.pool.allocate().expect("free count checked above");
            table.blocks.push(b);
        }
        if self.prefix_caching {
            let full = (num_computed + num_new).min(tokens.len()) / bs;
            while table.num_hashed < full {
                let i = table.num_hashed;
                let h = hash_block_tokens(table.last_hash, &tokens[i * bs..(i + 1) * bs]);
                self.pool.set_hash(table.blocks[i], h);
                table.last_hash = Some(h);
                table.num_hashed += 1;
            }
        }
        Ok(())
    }

    /// Gives `child` the first `num_tokens` tokens' blocks of `parent` (whole blocks only),
    /// shared by reference count: n > 1 choices share their prompt's KV.
    pub fn fork(&mut self, parent: SeqId, child: SeqId, num_tokens: usize) {
        let n = num_tokens / self.block_size;
        let Some(p) = self.tables.get(&parent) else {
            return;
        };
        let blocks: Vec<BlockId> = p.blocks.iter().take(n).copied().collect();
        let (num_hashed, last_hash) = if p.num_hashed >= n && n > 0 {
            (n, self.pool.hash_of(blocks[n - 1]))
        } else {
            (0, None)
        };
        for &b in &blocks {
            self.pool.acquire(b);
        }
        let child_table = SeqBlocks {
            blocks,
            num_hashed: if last_hash.is_some() { num_hashed } else { 0 },
            last_hash,
        };
        if let Some(old) = self.tables.insert(child, child_table) {
            for b in old.blocks.into_iter().rev() {
                self.pool.release(b);
            }
        }
    }

    /// Releases all of a sequence's blocks, tail first, so the least valuable blocks (the
    /// ends of prefixes) are evicted before the shared heads.
    pub fn free(&mut self, seq: SeqId) {
        if let Some(table) = self.tables.remove(&seq) {
            for b in table.blocks.into_iter().rev() {
                self.pool.release(b);
            }
        }
    }

    pub fn check_invariants(&self) -> Result<(), String> {
        self.pool.check_invariants()?;
        let mut refs = vec![0u32; self.num_total_blocks()];
        for t in self.tables.values() {
            for &b in &t.blocks {
                refs[b as usize] += 1;
            }
        }
        for (b, &r) in refs.iter().enumerate() {
            if self.pool.ref_count(b as BlockId) != r {
                return Err(format!(
                    "block {b}: ref count {} but {r} table entries",
                    self.pool.ref_count(b as BlockId)
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_hit_shares_blocks_and_accounting_returns() {
        let mut kv = KvCacheManager::new(8, 4, true);
        let prompt: Vec<u32> = (0..10).collect();
        kv.allocate(1, &prompt, 0, 10, &[]).unwrap();
        assert_eq!(kv.num_free_blocks(), 5);
        let hits = kv.cached_prefix(&prompt);
        assert_eq!(hits.len(), 2, "two full blocks of 4 are cached");
        kv.allocate(2, &prompt, 8, 2, &hits).unwrap();
        assert_eq!(kv.block_table(2)[..2], kv.block_table(1)[..2]);
        assert_eq!(kv.num_free_blocks(), 4);
        kv.check_invariants().unwrap();
        kv.free(1);
        kv.free(2);
        assert_eq!(kv.num_free_blocks(), 8);
        // Freed full blocks stay cached until evicted.
        assert_eq!(kv.cached_prefix(&prompt).len(), 2);
        kv.check_invariants().unwrap();
    }

    #[test]
    fn allocation_is_all_or_nothing() {
        let mut kv = KvCacheManager::new(2, 4, false);
        let t: Vec<u32> = (0..12).collect();
        assert_eq!(
            kv.allocate(1, &t, 0, 12, &[]),
            Err(AllocationError::OutOfBlocks)
        );
        assert_eq!(kv.num_free_blocks(), 2);
        assert!(!kv.has_blocks(1));
    }

    #[test]
    fn eviction_drops_cached_hash() {
        let mut kv = KvCacheManager::new(2, 2, true);
        let a = [1u32, 2, 3];
        kv.allocate(1, &a, 0, 3, &[]).unwrap();
        kv.free(1);
        assert_eq!(kv.cached_prefix(&a).len(), 1);
        let b = [7u32, 8, 9, 10];
        kv.allocate(2, &b, 0, 4, &[]).unwrap();
        assert_eq!(kv.cached_prefix(&a).len(), 0, "evicted");
        kv.free(2);
        kv.check_invariants().unwrap();
    }

    #[test]
    fn fork_shares_full_blocks() {
        let mut kv = KvCacheManager::new(6, 4, false);
        let t: Vec<u32> = (0..9).collect();
        kv.allocate(1, &t, 0, 9, &[]).unwrap();
        kv.fork(1, 2, 8);
        assert_eq!(kv.block_table(2), &kv.block_table(1)[..2]);
        kv.allocate(2, &t, 8, 1, &[]).unwrap();
        assert_ne!(kv.block_table(2)[2], kv.block_table(1)[2]);
        kv.check_invariants().unwrap();
        kv.free(1);
        kv.free(2);
        assert_eq!(kv.num_free_blocks(), 6);
    }
}
