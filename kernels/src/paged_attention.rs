//! Paged attention over a mixed batch: every sequence contributes `q_len >= 1` query tokens
//! (a prefill chunk, or one decode token) that attend causally to all of that sequence's
//! tokens in the paged cache, including the ones written this step.
//!
//! The CPU implementation is deliberately plain (per query token and head: scores, a stable
//! softmax, a weighted sum of values, all in f32). It is the reference the CUDA decode,
//! split-K and flash-style prefill kernels are checked against.

use crate::elem::{Elem, contiguous, unsupported};
use crate::kv_layout::KvCacheShape;
use crate::metadata::{AttentionMetadata, HostAttentionMetadata};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Arc;

struct PagedAttention {
    scale: f32,
    meta: Arc<HostAttentionMetadata>,
}

/// Attention of `q` (`[num_tokens, num_heads, head_size]`) against the paged caches
/// (`[num_blocks, num_kv_heads, block_size, head_size]`). Returns `[num_tokens, num_heads,
/// head_size]` in q's dtype. Query token `j` of a sequence with `q_len` new tokens and
/// `context_len` cached tokens sits at position `context_len - q_len + j` and sees cache
/// positions `0..=that`.
pub fn paged_attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &AttentionMetadata,
    scale: f32,
) -> Result<Tensor> {
    let q = q.contiguous()?;
    let shape = KvCacheShape::from_dims(k_cache.dims())?;
    meta.host.validate(shape.block_size)?;
    let op = PagedAttention {
        scale,
        meta: meta.host.clone(),
    };
    q.apply_op3_no_bwd(k_cache, v_cache, &op)
}

impl PagedAttention {
    fn run<T: Elem>(
        &self,
        q: &[T],
        q_dims: &[usize],
        k: &[T],
        v: &[T],
        shape: KvCacheShape,
    ) -> Result<Vec<T>> {
        let (num_tokens, num_heads, hs) = match q_dims {
            &[t, h, d] => (t, h, d),
            _ => candle_core::bail!("paged_attention: q must be [tokens, heads, head_size]"),
        };
        if hs != shape.head_size || num_heads % shape.num_kv_heads != 0 {
            candle_core::bail!("paged_attention: q {q_dims:?} incompatible with cache {shape:?}");
        }
        if num_tokens != self.meta.num_tokens() {
            candle_core::bail!(
                "paged_attention: {num_tokens} query tokens, metadata has {}",
                self.meta.num_tokens()
            );
        }
        let group = num_heads / shape.num_kv_heads;
        let bs = shape.block_size;
        let mut out = vec![T::from_f32(0.0); q.len()];
        let mut scores: Vec<f32> = Vec::new();
        let mut acc = vec![0f32; hs];
        for s in 0..self.meta.num_seqs() {
            let (q_start, q_end) = (
                self.meta.query_start_loc[s] as usize,
                self.meta.query_start_loc[s + 1] as usize,
            );
            let ctx = self.meta.context_lens[s] as usize;
            let q_len = q_end - q_start;
            let table = self.meta.block_table(s);
            for j in 0..q_len {
                let t = q_start + j;
                let visible = ctx - q_len + j + 1;
                for h in 0..num_heads {
                    let kv_h = h / group;
                    let q_row = &q[(t * num_heads + h) * hs..][..hs];
                    scores.clear();
                    let mut max = f32::NEG_INFINITY;
                    for pos in 0..visible {
                        let base = shape.offset(table[pos / bs] as usize, kv_h, pos % bs);
                        let k_row = &k[base..base + hs];
                        let dot: f32 = q_row
                            .iter()
                            .zip(k_row)
                            .map(|(a, b)| a.to_f32() * b.to_f32())
                            .sum();
                        let score = dot * self.scale;
                        max = max.max(score);
                        scores.push(score);
                    }
                    let mut denom = 0f32;
                    for sc in scores.iter_mut() {
                        *sc = (*sc - max).exp();
                        denom += *sc;
                    }
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    for (pos, w) in scores.iter().enumerate() {
                        let base = shape.offset(table[pos / bs] as usize, kv_h, pos % bs);
                        for (a, vv) in acc.iter_mut().zip(&v[base..base + hs]) {
                            *a += w * vv.to_f32();
                        }
                    }
                    let o = &mut out[(t * num_heads + h) * hs..][..hs];
                    for (dst, a) in o.iter_mut().zip(&acc) {
                        *dst = T::from_f32(a / denom);
                    }
                }
            }
        }
        Ok(out)
    }
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        "paged-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_l: &Layout,
        k: &CpuStorage,
        k_l: &Layout,
        v: &CpuStorage,
        v_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let shape = KvCacheShape::from_dims(k_l.dims())?;
        if v_l.dims() != k_l.dims() {
            candle_core::bail!("{op}: key and value caches differ in shape");
        }
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.run(
                    contiguous(q, q_l, op)?,
                    q_l.dims(),
                    contiguous(k, k_l, op)?,
                    contiguous(v, v_l, op)?,
                    shape,
                )?)
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                CpuStorage::BF16(self.run(
                    contiguous(q, q_l, op)?,
                    q_l.dims(),
                    contiguous(k, k_l, op)?,
                    contiguous(v, v_l, op)?,
                    shape,
                )?)
            }
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => {
                CpuStorage::F16(self.run(
                    contiguous(q, q_l, op)?,
                    q_l.dims(),
                    contiguous(k, k_l, op)?,
                    contiguous(v, v_l, op)?,
                    shape,
                )?)
            }
            (q, _, _) => return Err(unsupported(op, q)),
        };
        Ok((out, q_l.shape().clone()))
    }
}
