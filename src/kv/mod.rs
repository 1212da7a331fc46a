//! The paged KV cache's bookkeeping: which block belongs to which sequence.
//!
//! Memory is cut into fixed-size blocks of `block_size` tokens (the storage lives in
//! `indus_models::KvCache`, laid out as `indus_kernels::kv_layout` says). A sequence owns a
//! block table, the list of its blocks in token order. Full blocks are identified by a hash of
//! their tokens chained with their parent block's hash, so two requests sharing a prefix share
//! its blocks (prefix caching). Blocks are reference counted; a block whose count drops to
//! zero keeps its contents and its hash until it is needed again and evicted, least recently
//! freed first.
//!
//! Accounting is exact: after every sequence has been freed, `num_free_blocks()` equals the
//! total again. Tests and property tests assert it.

mod block_pool;
mod hash;
mod manager;

pub use block_pool::{BlockId, BlockPool};
pub use hash::{BlockHash, hash_block_tokens};
pub use manager::{AllocationError, KvCacheManager, SeqId};
