//! The paged KV cache's memory: one key and one value tensor per layer in the layout of
//! [`indus_kernels::kv_layout`]. Which block belongs to whom is the engine's business
//! (`indus::kv`); this is only the storage.

use crate::Result;
use crate::config::ModelConfig;
use candle_core::{DType, Device, Tensor};
use indus_kernels::KvCacheShape;

pub struct KvCache {
    pub shape: KvCacheShape,
    /// `(keys, values)` per layer.
    pub layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn new(
        cfg: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = KvCacheShape {
            num_blocks,
            num_kv_heads: cfg.num_kv_heads,
            block_size,
            head_size: cfg.head_dim,
        };
        let layers = (0..cfg.num_layers)
            .map(|_| {
                Ok((
                    Tensor::zeros(shape.dims().as_slice(), dtype, device)?,
                    Tensor::zeros(shape.dims().as_slice(), dtype, device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { shape, layers })
    }

    /// Bytes one block takes across all layers, keys and values.
    pub fn block_bytes(cfg: &ModelConfig, block_size: usize, dtype: DType) -> usize {
        cfg.kv_bytes_per_token(dtype.size_in_bytes()) * block_size
    }
}
