//! `reshape_and_cache`: writes the step's new keys or values into their slots of the paged
//! cache, in place.

use crate::elem::{Elem, contiguous, index_values, unsupported};
use crate::kv_layout::KvCacheShape;
use crate::metadata::{AttentionMetadata, check_slots};
use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor};

struct WriteKvCache;

/// Writes the step's `new` keys or values (`[num_tokens, num_kv_heads, head_size]`) into `cache` at the slots of
/// `meta`, after checking the step's metadata against the cache ([`AttentionMetadata::validate_for`], the same
/// check paged attention makes, done once per step): a slot outside the cache is an error on every device, before
/// anything is written. This is the call a model layer makes.
pub fn write_step_kv_cache(cache: &Tensor, new: &Tensor, meta: &AttentionMetadata) -> Result<()> {
    meta.validate_for(&KvCacheShape::from_dims(cache.dims())?)?;
    write_kv_cache(cache, new, &meta.slot_mapping)
}

/// Writes `new` (`[num_tokens, num_kv_heads, head_size]`) into `cache`
/// (`[num_blocks, num_kv_heads, block_size, head_size]`) at `slot_mapping` (`[num_tokens]`,
/// integer; -1 skips the token).
///
/// On the CPU every slot is checked before anything is written (an error leaves the cache untouched). On the GPU
/// the slots live in device memory and reading them back would stall the stream, so they are not checked here:
/// the kernel skips a slot outside the cache instead of writing out of bounds. Prefer [`write_step_kv_cache`],
/// which checks the host copy of the slots on every device.
pub fn write_kv_cache(cache: &Tensor, new: &Tensor, slot_mapping: &Tensor) -> Result<()> {
    let new = new.contiguous()?;
    if new.dtype() != cache.dtype() {
        candle_core::bail!(
            "write_kv_cache: new {:?} vs cache {:?}",
            new.dtype(),
            cache.dtype()
        );
    }
    if cache.device().is_cuda() && slot_mapping.dtype() != candle_core::DType::I64 {
        // The CUDA kernel reads i64 slots (the metadata's own dtype).
        let slots = slot_mapping.to_dtype(candle_core::DType::I64)?;
        return cache.inplace_op3(&new, &slots, &WriteKvCache);
    }
    cache.inplace_op3(&new, slot_mapping, &WriteKvCache)
}

fn write_typed<T: Elem>(
    cache: &mut [T],
    shape: KvCacheShape,
    new: &[T],
    slots: &[i64],
) -> Result<()> {
    let hs = shape.head_size;
    let per_token = shape.num_kv_heads * hs;
    if new.len() != slots.len() * per_token {
        candle_core::bail!(
            "write_kv_cache: {} values for {} slots",
            new.len(),
            slots.len()
        );
    }
    // All slots first: an error must not leave half of the step written.
    check_slots(slots, shape.num_blocks, shape.block_size).map_err(candle_core::Error::wrap)?;
    for (t, &slot) in slots.iter().enumerate() {
        if slot < 0 {
            continue;
        }
        let (block, in_block) = (
            slot as usize / shape.block_size,
            slot as usize % shape.block_size,
        );
        for h in 0..shape.num_kv_heads {
            let dst = shape.offset(block, h, in_block);
            let src = t * per_token + h * hs;
            cache[dst..dst + hs].copy_from_slice(&new[src..src + hs]);
        }
    }
    Ok(())
}

impl InplaceOp3 for WriteKvCache {
    fn name(&self) -> &'static str {
        "write-kv-cache"
    }

    fn cpu_fwd(
        &self,
        cache: &mut CpuStorage,
        cache_l: &Layout,
        new: &CpuStorage,
        new_l: &Layout,
        slots: &CpuStorage,
        slots_l: &Layout,
    ) -> Result<()> {
        let op = self.name();
        if !cache_l.is_contiguous() || cache_l.start_offset() != 0 {
            candle_core::bail!("{op}: cache must be a whole contiguous tensor");
        }
        let shape = KvCacheShape::from_dims(cache_l.dims())?;
        let slots = index_values(slots, slots_l, op)?;
        match (cache, new) {
            (CpuStorage::F32(c), CpuStorage::F32(n)) => {
                write_typed(c, shape, contiguous(n, new_l, op)?, &slots)
            }
            (CpuStorage::BF16(c), CpuStorage::BF16(n)) => {
                write_typed(c, shape, contiguous(n, new_l, op)?, &slots)
            }
            (CpuStorage::F16(c), CpuStorage::F16(n)) => {
                write_typed(c, shape, contiguous(n, new_l, op)?, &slots)
            }
            (c, _) => Err(unsupported(op, c)),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        cache: &mut candle_core::CudaStorage,
        cache_l: &Layout,
        new: &candle_core::CudaStorage,
        new_l: &Layout,
        slots: &candle_core::CudaStorage,
        slots_l: &Layout,
    ) -> Result<()> {
        crate::cuda::ops::write_kv_cache(cache, cache_l, new, new_l, slots, slots_l)
    }
}
