//! Per-step attention metadata: where each sequence's tokens are in the flattened batch and
//! where its KV lives in the paged cache.

use candle_core::{Device, Result, Tensor};
use std::sync::Arc;

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
    /// Start of each sequence's query tokens in the flattened batch; `num_seqs + 1` entries.
    pub query_start_loc: Vec<u32>,
}

impl HostAttentionMetadata {
    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    pub fn num_tokens(&self) -> usize {
        self.slot_mapping.len()
    }

    pub fn block_table(&self, seq: usize) -> &[u32] {
        let w = self.max_blocks_per_seq;
        &self.block_tables[seq * w..(seq + 1) * w]
    }

    /// Checks the invariants every kernel relies on, so a runner bug fails loudly instead of
    /// reading out of bounds.
    pub fn validate(&self, block_size: usize) -> Result<()> {
        let n = self.num_seqs();
        if self.query_start_loc.len() != n + 1 {
            candle_core::bail!("query_start_loc must have num_seqs + 1 entries");
        }
        if self.block_tables.len() != n * self.max_blocks_per_seq {
            candle_core::bail!("block_tables must be num_seqs x max_blocks_per_seq");
        }
        if self.query_start_loc.last().copied().unwrap_or(0) as usize != self.num_tokens() {
            candle_core::bail!("query_start_loc must end at the number of tokens");
        }
        for s in 0..n {
            let q_len = self.query_start_loc[s + 1].saturating_sub(self.query_start_loc[s]);
            let ctx = self.context_lens[s];
            if q_len > ctx {
                candle_core::bail!("sequence {s}: {q_len} query tokens but context {ctx}");
            }
            if (ctx as usize).div_ceil(block_size) > self.max_blocks_per_seq {
                candle_core::bail!("sequence {s}: context {ctx} exceeds its block table");
            }
        }
        Ok(())
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
        })
    }
}
