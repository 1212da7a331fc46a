//! Per-step attention metadata: where each sequence's tokens are in the flattened batch and
//! where its KV lives in the paged cache.
//!
//! The metadata is validated against the cache before any kernel runs, by one function
//! ([`HostAttentionMetadata::check`]) on the CPU and the GPU path alike: the CUDA kernels index the cache with it and
//! cannot report an error, so a runner bug must fail here, as an error, and never become an out-of-bounds read or a
//! write the GPU silently skips.

use crate::kv_layout::KvCacheShape;
use candle_core::{Device, Result, Tensor};
use std::sync::{Arc, OnceLock};

/// What is wrong with a step's metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("query_start_loc has {got} entries for {seqs} sequences (needs num_seqs + 1)")]
    QueryStartLen { got: usize, seqs: usize },
    #[error("query_start_loc must start at 0, starts at {0}")]
    QueryStartNotZero(u32),
    #[error("query_start_loc decreases at sequence {seq}: {from} then {to}")]
    QueryStartDecreases { seq: usize, from: u32, to: u32 },
    #[error("query_start_loc ends at {end}, but the step has {tokens} tokens")]
    QueryStartEnd { end: u32, tokens: usize },
    #[error("block_tables has {got} entries for {seqs} sequences x {width} blocks")]
    BlockTablesShape {
        got: usize,
        seqs: usize,
        width: usize,
    },
    #[error("sequence {seq}: {q_len} query tokens but a context of {ctx}")]
    QueryLongerThanContext { seq: usize, q_len: u32, ctx: u32 },
    #[error(
        "sequence {seq}: a context of {ctx} needs {needed} blocks, its block table has {width}"
    )]
    ContextExceedsTable {
        seq: usize,
        ctx: u32,
        needed: usize,
        width: usize,
    },
    #[error(
        "sequence {seq}: block table entry {index} is block {block}, the cache has {num_blocks} blocks"
    )]
    BlockOutOfRange {
        seq: usize,
        index: usize,
        block: u32,
        num_blocks: usize,
    },
    #[error("token {token}: slot {slot} is outside the cache of {capacity} slots (-1 is padding)")]
    SlotOutOfRange {
        token: usize,
        slot: i64,
        capacity: usize,
    },
    #[error("the cache's block size is 0")]
    ZeroBlockSize,
    #[error("{what} of {value} exceeds the kernels' 32-bit signed index range")]
    TooLarge { what: &'static str, value: usize },
}

/// Host copies of the step's attention inputs. The CPU kernels read these directly; the GPU
/// path uploads them once per step into device tensors ([`AttentionMetadata::device`]).
#[derive(Debug, Clone, Default)]
pub struct HostAttentionMetadata {
    /// Cache slot of every token of the step (`block * block_size + offset`), -1 for padding.
    pub slot_mapping: Vec<i64>,
    /// Row-major `[num_seqs, max_blocks_per_seq]` block ids; rows padded with 0.
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
    /// Tokens of each sequence in the cache after this step's write (computed + new).
    pub context_lens: Vec<u32>,
    /// Start of each sequence's query tokens in the flattened batch; `num_seqs + 1` entries,
    /// starting at 0, never decreasing, ending at the number of tokens.
    pub query_start_loc: Vec<u32>,
}

const I32_MAX: usize = i32::MAX as usize;

impl HostAttentionMetadata {
    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    pub fn num_tokens(&self) -> usize {
        self.slot_mapping.len()
    }

    /// Sequence `seq`'s row of the block table. Panics if `seq` is out of range (callers iterate over
    /// `0..num_seqs()` of checked metadata).
    pub fn block_table(&self, seq: usize) -> &[u32] {
        let w = self.max_blocks_per_seq;
        &self.block_tables[seq * w..(seq + 1) * w]
    }

    /// The shape of the metadata alone: `query_start_loc` has `num_seqs + 1` entries, starts at 0, never decreases
    /// and ends at the number of tokens; the block table is `num_seqs x max_blocks_per_seq`; counts fit the
    /// kernels' 32-bit indices. Everything that reads `query_start_loc` relies on this.
    pub fn check_structure(&self) -> std::result::Result<(), MetadataError> {
        let n = self.num_seqs();
        let qsl = &self.query_start_loc;
        if qsl.len() != n + 1 {
            return Err(MetadataError::QueryStartLen {
                got: qsl.len(),
                seqs: n,
            });
        }
        if qsl[0] != 0 {
            return Err(MetadataError::QueryStartNotZero(qsl[0]));
        }
        for (seq, w) in qsl.windows(2).enumerate() {
            if w[1] < w[0] {
                return Err(MetadataError::QueryStartDecreases {
                    seq,
                    from: w[0],
                    to: w[1],
                });
            }
        }
        if qsl[n] as usize != self.num_tokens() {
            return Err(MetadataError::QueryStartEnd {
                end: qsl[n],
                tokens: self.num_tokens(),
            });
        }
        let width = self.max_blocks_per_seq;
        if n.checked_mul(width) != Some(self.block_tables.len()) {
            return Err(MetadataError::BlockTablesShape {
                got: self.block_tables.len(),
                seqs: n,
                width,
            });
        }
        for (what, value) in [
            ("the number of tokens", self.num_tokens()),
            ("the number of sequences", n),
            ("the block table width", width),
        ] {
            if value > I32_MAX {
                return Err(MetadataError::TooLarge { what, value });
            }
        }
        Ok(())
    }

    /// Every invariant the kernels rely on, against a cache of `num_blocks` blocks of `block_size` tokens: the
    /// structure ([`Self::check_structure`]), `q_len <= context_len`, each context fits its block table, every
    /// block id a sequence reads is below `num_blocks`, and every slot is -1 (padding) or inside the cache.
    pub fn check(
        &self,
        num_blocks: usize,
        block_size: usize,
    ) -> std::result::Result<(), MetadataError> {
        self.check_structure()?;
        if block_size == 0 {
            return Err(MetadataError::ZeroBlockSize);
        }
        let width = self.max_blocks_per_seq;
        for seq in 0..self.num_seqs() {
            let q_len = self.query_start_loc[seq + 1] - self.query_start_loc[seq];
            let ctx = self.context_lens[seq];
            if q_len > ctx {
                return Err(MetadataError::QueryLongerThanContext { seq, q_len, ctx });
            }
            if ctx as usize > I32_MAX {
                return Err(MetadataError::TooLarge {
                    what: "a context length",
                    value: ctx as usize,
                });
            }
            let needed = (ctx as usize).div_ceil(block_size);
            if needed > width {
                return Err(MetadataError::ContextExceedsTable {
                    seq,
                    ctx,
                    needed,
                    width,
                });
            }
            // Only the entries a context covers are read; the padding after them is never dereferenced.
            let table = &self.block_tables[seq * width..seq * width + needed];
            if let Some((index, &block)) = table
                .iter()
                .enumerate()
                .find(|&(_, &b)| b as usize >= num_blocks)
            {
                return Err(MetadataError::BlockOutOfRange {
                    seq,
                    index,
                    block,
                    num_blocks,
                });
            }
        }
        check_slots(&self.slot_mapping, num_blocks, block_size)
    }

    /// [`Self::check`] against a cache's shape, as a candle error (what the ops return).
    pub fn validate(&self, cache: &KvCacheShape) -> Result<()> {
        self.check(cache.num_blocks, cache.block_size)
            .map_err(candle_core::Error::wrap)
    }
}

/// Every slot is -1 (padding) or below `num_blocks * block_size`. The cache write checks all of them before it
/// writes anything, so a bad slot never leaves a half-written step behind.
pub fn check_slots(
    slots: &[i64],
    num_blocks: usize,
    block_size: usize,
) -> std::result::Result<(), MetadataError> {
    let capacity = num_blocks.saturating_mul(block_size);
    match slots
        .iter()
        .enumerate()
        .find(|&(_, &s)| s != -1 && (s < 0 || s as u64 >= capacity as u64))
    {
        Some((token, &slot)) => Err(MetadataError::SlotOutOfRange {
            token,
            slot,
            capacity,
        }),
        None => Ok(()),
    }
}

/// Attention metadata for one step: host values plus the device tensors kernels consume.
#[derive(Debug, Clone)]
pub struct AttentionMetadata {
    pub host: Arc<HostAttentionMetadata>,
    /// `slot_mapping` as an i64 tensor on the model's device (input of the cache write).
    pub slot_mapping: Tensor,
    /// Device copies for the GPU kernels; on CPU these alias nothing and are unused.
    pub device: Option<DeviceAttentionMetadata>,
    /// The host metadata (by address: `host` is a public field and could be swapped) and the (num_blocks,
    /// block_size) it passed the check for: every layer of a step uses the same cache shape, so a step is checked
    /// once, not once per layer and op.
    checked: Arc<OnceLock<(usize, usize, usize)>>,
}

/// The step's metadata uploaded to the GPU (one small copy per step).
#[derive(Debug, Clone)]
pub struct DeviceAttentionMetadata {
    pub block_tables: Tensor,
    pub context_lens: Tensor,
    pub query_start_loc: Tensor,
}

impl AttentionMetadata {
    pub fn new(host: HostAttentionMetadata, device: &Device) -> Result<Self> {
        let slot_mapping = Tensor::new(host.slot_mapping.as_slice(), device)?;
        let device_meta = if device.is_cpu() {
            None
        } else {
            let n = host.num_seqs();
            Some(DeviceAttentionMetadata {
                block_tables: Tensor::from_slice(
                    &host.block_tables,
                    (n, host.max_blocks_per_seq),
                    device,
                )?,
                context_lens: Tensor::new(host.context_lens.as_slice(), device)?,
                query_start_loc: Tensor::new(host.query_start_loc.as_slice(), device)?,
            })
        };
        Ok(Self {
            host: Arc::new(host),
            slot_mapping,
            device: device_meta,
            checked: Arc::new(OnceLock::new()),
        })
    }

    /// Checks the host metadata against `cache` ([`HostAttentionMetadata::check`]) unless it already passed for
    /// this cache's number of blocks and block size. Called by every op that reads the metadata, on every device,
    /// before anything is launched or written.
    pub fn validate_for(&self, cache: &KvCacheShape) -> Result<()> {
        let key = (
            Arc::as_ptr(&self.host) as usize,
            cache.num_blocks,
            cache.block_size,
        );
        if self.checked.get() == Some(&key) {
            return Ok(());
        }
        self.host.validate(cache)?;
        let _ = self.checked.set(key);
        Ok(())
    }
}
