//! Paged attention over a mixed batch: every sequence contributes `q_len >= 1` query tokens
//! (a prefill chunk, or one decode token) that attend causally to all of that sequence's
//! tokens in the paged cache, including the ones written this step.
//!
//! The CPU implementation is deliberately plain (per query token and head: scores, a stable
//! softmax, a weighted sum of values, all in f32). It is the reference the CUDA decode,
//! split-K and flash-style prefill kernels are checked against.

use crate::disjoint::DisjointWrites;
use crate::elem::{Elem, contiguous, unsupported};
use crate::kv_layout::KvCacheShape;
use crate::metadata::{AttentionMetadata, DeviceAttentionMetadata, HostAttentionMetadata};
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::sync::Arc;

pub(crate) struct PagedAttention {
    pub(crate) scale: f32,
    pub(crate) variant: AttentionVariant,
    pub(crate) meta: Arc<HostAttentionMetadata>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) device: Option<DeviceAttentionMetadata>,
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) options: PagedAttentionOptions,
}

/// How the CUDA path splits long decode contexts (split-K / flash-decoding). The CPU path ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeSplit {
    /// Split when the context is long and the batch leaves SMs idle (see [`plan_attention`]).
    #[default]
    Auto,
    /// One CTA covers a sequence's whole context.
    Off,
    /// Partitions of this many tokens (a multiple of 16), each reduced by a second kernel.
    Partition(usize),
}

/// Kernel choices of the CUDA path (for tests and benchmarks; the defaults are what the engine uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PagedAttentionOptions {
    pub decode_split: DecodeSplit,
    /// Run every query token through the decode/general kernel, never the tensor-core prefill kernel.
    pub general_kernel_only: bool,
}

/// What a layer's attention computes beyond causal softmax attention: a sliding window
/// (Mistral, Gemma 2/3 local layers) and a tanh soft-cap of the scores (Gemma 2). Exact:
/// keys outside the window are skipped, their blocks stay allocated.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AttentionVariant {
    /// A query at position `p` sees keys at positions `(p - window, p]`; `None`: all of `0..=p`.
    pub window: Option<usize>,
    /// Scores become `cap * tanh(score / cap)` (after the scale), before the softmax.
    pub softcap: Option<f32>,
}

/// Tokens per split-K partition of the decode kernel.
pub const DECODE_PARTITION_SIZE: usize = 512;
/// Head sizes of the decode/general kernel and of the tensor-core prefill kernel, and the group sizes of the decode
/// kernel's instances: one definition with the CUDA instance lists ([`crate::shared`]).
pub use crate::shared::{DECODE_GROUPS, DECODE_HEAD_SIZES, PREFILL_HEAD_SIZES};

/// Which CUDA kernels one paged-attention call launches. A pure function of the step's shape, so it is unit-tested
/// on CPU; the CUDA forward follows it to the letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionPlan {
    /// Tensor-core prefill kernel for the sequences with more than one query token.
    pub prefill: bool,
    /// Decode/general kernel (one CTA per query token and KV head).
    pub general: bool,
    /// The general kernel skips sequences with q_len != 1 (the prefill kernel has them).
    pub only_single: bool,
    /// Query heads per CTA of the general kernel (1, 2, 4 or 8) and CTAs per KV head.
    pub group_max: usize,
    pub head_chunks: usize,
    /// Split-K partitions of the general kernel (1: none) and their size in tokens.
    pub partitions: usize,
    pub partition_size: usize,
}

/// Plans the CUDA kernels of one call; errors where no kernel covers the shape.
pub fn plan_attention(
    meta: &HostAttentionMetadata,
    dtype: DType,
    num_heads: usize,
    num_kv_heads: usize,
    head_size: usize,
    sm_count: usize,
    options: PagedAttentionOptions,
) -> Result<AttentionPlan> {
    if !DECODE_HEAD_SIZES.contains(&head_size) {
        candle_core::bail!(
            "paged_attention: head size {head_size} has no CUDA kernel (supported: {DECODE_HEAD_SIZES:?})"
        );
    }
    if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
        candle_core::bail!("paged_attention: dtype {dtype:?} has no CUDA kernel");
    }
    if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
        candle_core::bail!("paged_attention: {num_heads} heads for {num_kv_heads} kv heads");
    }
    meta.check_structure().map_err(candle_core::Error::wrap)?;
    let q_len = |s: usize| meta.query_start_loc[s + 1] - meta.query_start_loc[s];
    let n = meta.num_seqs();
    let any_multi = (0..n).any(|s| q_len(s) > 1);
    let any_single = (0..n).any(|s| q_len(s) == 1);
    let tensor_cores = matches!(dtype, DType::BF16 | DType::F16)
        && PREFILL_HEAD_SIZES.contains(&head_size)
        && !options.general_kernel_only;
    let prefill = any_multi && tensor_cores;
    let general = !prefill || any_single;
    let group = num_heads / num_kv_heads;
    // The smallest instance covering the group, else the largest (several CTAs per KV head).
    let largest = DECODE_GROUPS[DECODE_GROUPS.len() - 1];
    let group_max = DECODE_GROUPS
        .iter()
        .copied()
        .find(|&g| g >= group)
        .unwrap_or(largest);
    let head_chunks = group.div_ceil(group_max);
    // Split-K only for pure decode steps: partial results are kept per query token.
    let (mut partitions, mut partition_size) = (1, DECODE_PARTITION_SIZE);
    if general && !any_multi {
        let max_ctx = (0..n)
            .filter(|&s| q_len(s) == 1)
            .map(|s| meta.context_lens[s] as usize)
            .max()
            .unwrap_or(0);
        let singles = (0..n).filter(|&s| q_len(s) == 1).count();
        let ctas = singles * num_kv_heads * head_chunks;
        match options.decode_split {
            DecodeSplit::Off => {}
            DecodeSplit::Partition(p) => {
                if p == 0 || !p.is_multiple_of(16) {
                    candle_core::bail!(
                        "paged_attention: partition size {p} must be a positive multiple of 16"
                    );
                }
                partition_size = p;
                partitions = max_ctx.div_ceil(p).max(1);
            }
            DecodeSplit::Auto => {
                let plenty = ctas >= 8 * sm_count && max_ctx <= 4 * DECODE_PARTITION_SIZE;
                if max_ctx > DECODE_PARTITION_SIZE && !plenty {
                    partitions = max_ctx.div_ceil(DECODE_PARTITION_SIZE);
                }
            }
        }
        if partitions > 65_535 {
            candle_core::bail!(
                "paged_attention: context of {max_ctx} tokens needs too many partitions"
            );
        }
    }
    Ok(AttentionPlan {
        prefill,
        general,
        only_single: prefill,
        group_max,
        head_chunks,
        partitions,
        partition_size,
    })
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
    paged_attention_with(
        q,
        k_cache,
        v_cache,
        meta,
        scale,
        PagedAttentionOptions::default(),
    )
}

/// [`paged_attention`] with a sliding window and/or a score soft-cap (CPU reference and CUDA
/// kernels alike).
pub fn paged_attention_variant(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &AttentionMetadata,
    scale: f32,
    variant: AttentionVariant,
) -> Result<Tensor> {
    run_paged_attention(
        q,
        k_cache,
        v_cache,
        meta,
        scale,
        variant,
        PagedAttentionOptions::default(),
    )
}

/// [`paged_attention`] with explicit CUDA kernel choices (tests, benchmarks).
pub fn paged_attention_with(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &AttentionMetadata,
    scale: f32,
    options: PagedAttentionOptions,
) -> Result<Tensor> {
    run_paged_attention(
        q,
        k_cache,
        v_cache,
        meta,
        scale,
        AttentionVariant::default(),
        options,
    )
}

/// [`paged_attention`] with a variant and explicit CUDA kernel choices (the GPU check).
pub fn paged_attention_variant_with(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &AttentionMetadata,
    scale: f32,
    variant: AttentionVariant,
    options: PagedAttentionOptions,
) -> Result<Tensor> {
    run_paged_attention(q, k_cache, v_cache, meta, scale, variant, options)
}

fn run_paged_attention(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    meta: &AttentionMetadata,
    scale: f32,
    variant: AttentionVariant,
    options: PagedAttentionOptions,
) -> Result<Tensor> {
    if variant.window == Some(0) {
        candle_core::bail!("paged_attention: a sliding window of 0 tokens sees nothing");
    }
    let mut q = q.contiguous()?;
    if q.device().is_cuda() && !q.layout().start_offset().is_multiple_of(8) {
        // The CUDA kernels read q with 16-byte loads.
        q = q.copy()?;
    }
    let shape = KvCacheShape::from_dims(k_cache.dims())?;
    if v_cache.dims() != k_cache.dims() {
        candle_core::bail!("paged_attention: key and value caches differ in shape");
    }
    // The same check on every device, before any kernel or CPU loop reads the metadata.
    meta.validate_for(&shape)?;
    let op = PagedAttention {
        scale,
        variant,
        meta: meta.host.clone(),
        device: meta.device.clone(),
        options,
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
        // Each query token's sequence and its offset in it.
        let mut tokens = Vec::with_capacity(num_tokens);
        for s in 0..self.meta.num_seqs() {
            let (q_start, q_end) = (
                self.meta.query_start_loc[s] as usize,
                self.meta.query_start_loc[s + 1] as usize,
            );
            tokens.extend((0..q_end - q_start).map(|j| (s, j, q_end - q_start)));
        }
        let shared = DisjointWrites::new(&mut out);
        // Query tokens are independent: they run on candle's worker pool (a 512-token prefill
        // spent a third of its time here on one core); each output row is computed the same
        // way whichever worker takes it.
        let attend = |range: std::ops::Range<usize>| {
            let mut scores: Vec<f32> = Vec::new();
            let mut acc = vec![0f32; hs];
            for t in range {
                let (s, j, q_len) = tokens[t];
                let ctx = self.meta.context_lens[s] as usize;
                let table = self.meta.block_table(s);
                let visible = ctx - q_len + j + 1;
                // Keys at positions first..visible: the window's (p - window, p].
                let first = match self.variant.window {
                    Some(w) => visible.saturating_sub(w),
                    None => 0,
                };
                for h in 0..num_heads {
                    let kv_h = h / group;
                    let q_row = &q[(t * num_heads + h) * hs..][..hs];
                    scores.clear();
                    let mut max = f32::NEG_INFINITY;
                    for pos in first..visible {
                        let base = shape.offset(table[pos / bs] as usize, kv_h, pos % bs);
                        let dot = dot(q_row, &k[base..base + hs]);
                        let score = match self.variant.softcap {
                            Some(cap) => cap * (dot * self.scale / cap).tanh(),
                            None => dot * self.scale,
                        };
                        max = max.max(score);
                        scores.push(score);
                    }
                    let mut denom = 0f32;
                    for sc in scores.iter_mut() {
                        *sc = (*sc - max).exp();
                        denom += *sc;
                    }
                    acc.iter_mut().for_each(|a| *a = 0.0);
                    for (pos, w) in (first..visible).zip(&scores) {
                        let base = shape.offset(table[pos / bs] as usize, kv_h, pos % bs);
                        for (a, vv) in acc.iter_mut().zip(&v[base..base + hs]) {
                            *a += w * vv.to_f32();
                        }
                    }
                    // SAFETY: row (t, h) is in `out` and only the worker with token t writes it.
                    let o = unsafe { shared.slice((t * num_heads + h) * hs, hs) };
                    for (dst, a) in o.iter_mut().zip(&acc) {
                        *dst = T::from_f32(a / denom);
                    }
                }
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(num_tokens, attend);
        Ok(out)
    }
}

/// `q · k` in eight interleaved partial sums (one serial sum of 64 products was most of a
/// long prefill's attention time); the order is fixed, so every row gets the same bits.
fn dot<T: Elem>(q: &[T], k: &[T]) -> f32 {
    let mut lanes = [0f32; 8];
    let (qc, kc) = (q.chunks_exact(8), k.chunks_exact(8));
    let (q_rest, k_rest) = (qc.remainder(), kc.remainder());
    for (a, b) in qc.zip(kc) {
        for i in 0..8 {
            lanes[i] += a[i].to_f32() * b[i].to_f32();
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (a, b) in q_rest.iter().zip(k_rest) {
        sum += a.to_f32() * b.to_f32();
    }
    sum
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        q_l: &Layout,
        k: &candle_core::CudaStorage,
        k_l: &Layout,
        v: &candle_core::CudaStorage,
        v_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::attention::forward(self, q, q_l, k, k_l, v, v_l)
    }
}
