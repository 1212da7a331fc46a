//! The one KV-cache layout of the whole engine.
//!
//! Each layer has a key cache and a value cache, each a tensor of shape
//! `[num_blocks, num_kv_heads, block_size, head_size]` ("HND" per block).
//!
//! Why this layout: for one (block, kv head) pair, the block's keys are one contiguous run of
//! `block_size * head_size` elements (4 KiB for 16 tokens × 128 dims in bf16). A GPU warp
//! reading a block for one head therefore issues fully coalesced 16-byte loads, the decode
//! kernel reads each KV head once for all the query heads that share it (GQA), and the
//! prefill kernel loads K/V tiles row by row straight into shared memory. Keys and values use
//! the same layout, so one cache-write kernel serves both. The CPU reference reads the same
//! bytes in the same order.
//!
//! A token's slot is `block_id * block_size + offset_in_block`; a slot of -1 means "no slot"
//! (padding) and is skipped by the cache write.

/// The shape of one layer's key (or value) cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheShape {
    pub num_blocks: usize,
    pub num_kv_heads: usize,
    pub block_size: usize,
    pub head_size: usize,
}

impl KvCacheShape {
    pub fn dims(&self) -> [usize; 4] {
        [
            self.num_blocks,
            self.num_kv_heads,
            self.block_size,
            self.head_size,
        ]
    }

    /// Element offset of `(block, kv_head, offset_in_block, 0)`.
    #[inline]
    pub fn offset(&self, block: usize, kv_head: usize, in_block: usize) -> usize {
        ((block * self.num_kv_heads + kv_head) * self.block_size + in_block) * self.head_size
    }

    /// Elements per layer per cache (keys or values).
    pub fn elements(&self) -> usize {
        self.num_blocks * self.num_kv_heads * self.block_size * self.head_size
    }

    pub fn from_dims(dims: &[usize]) -> candle_core::Result<Self> {
        match dims {
            &[num_blocks, num_kv_heads, block_size, head_size] => Ok(Self {
                num_blocks,
                num_kv_heads,
                block_size,
                head_size,
            }),
            _ => candle_core::bail!("kv cache must have 4 dims, got {dims:?}"),
        }
    }
}
