//! Self-attention over the paged KV cache: one fused q/k/v projection (fused at load time, or
//! already in the checkpoint as Phi-3's `qkv_proj`), optional per-head q/k RMSNorm (Qwen3),
//! rotary on q and k (on a leading part of each head with a partial rotary), the step's K/V
//! written into the cache, paged attention, the output projection.

use super::norm::RmsNorm;
use crate::Result;
use crate::linear::Linear;
use crate::weights::WeightSource;
use candle_core::Tensor;
use indus_kernels::{
    AttentionMetadata, AttentionVariant, paged_attention_variant, write_step_kv_cache,
};
use std::collections::BTreeSet;

/// The shape and options of one attention layer, as an architecture states them.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSpec {
    pub hidden: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dimensions of each head that rotary rotates (`head_dim` but for Phi-4-mini).
    pub rotary_dim: usize,
    /// The checkpoint has one `qkv_proj` (Phi-3) instead of `q_proj`, `k_proj`, `v_proj`.
    pub fused_qkv: bool,
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm of q and k before rotary (Qwen3, Gemma 3), with this epsilon.
    pub qk_norm_eps: Option<f64>,
    /// The q/k norms are Gemma's `1 + w` kind.
    pub gemma_norms: bool,
    /// Multiplies q·k (`head_dim^-1/2`, Gemma: `query_pre_attn_scalar^-1/2`).
    pub scale: f32,
    /// Sliding window and soft-cap of this layer.
    pub variant: AttentionVariant,
}

impl AttentionSpec {
    /// `1 / sqrt(head_dim)`, the scale of every family but Gemma.
    pub fn default_scale(head_dim: usize) -> f32 {
        1.0 / (head_dim as f32).sqrt()
    }
}

#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    rotary_dim: usize,
    scale: f32,
    variant: AttentionVariant,
}

impl Attention {
    /// Loads `{prefix}.{q,k,v,o}_proj` (and `{prefix}.{q,k}_norm` when the spec asks).
    pub(crate) fn load(src: &WeightSource, spec: &AttentionSpec, prefix: &str) -> Result<Self> {
        let (h, d) = (spec.hidden, spec.head_dim);
        let rows = [
            spec.num_heads * d,
            spec.num_kv_heads * d,
            spec.num_kv_heads * d,
        ];
        let qkv = if spec.fused_qkv {
            let name = |suffix: &str| vec![format!("{prefix}.qkv_proj.{suffix}")];
            let biases = spec.qkv_bias.then(|| name("bias"));
            src.linear(&name("weight"), &[rows.iter().sum()], h, biases.as_deref())?
        } else {
            let names = |suffix: &str| -> Vec<String> {
                ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .map(|p| format!("{prefix}.{p}.{suffix}"))
                    .collect()
            };
            let biases = spec.qkv_bias.then(|| names("bias"));
            src.linear(&names("weight"), &rows, h, biases.as_deref())?
        };
        let o = src.linear(
            &[format!("{prefix}.o_proj.weight")],
            &[h],
            spec.num_heads * d,
            None,
        )?;
        let norm = |n: &str| -> Result<Option<RmsNorm>> {
            let name = format!("{prefix}.{n}.weight");
            spec.qk_norm_eps
                .map(|eps| match spec.gemma_norms {
                    true => RmsNorm::load_gemma(src, &name, d, eps),
                    false => RmsNorm::load(src, &name, d, eps),
                })
                .transpose()
        };
        Ok(Self {
            qkv,
            o,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            num_heads: spec.num_heads,
            num_kv_heads: spec.num_kv_heads,
            head_dim: d,
            rotary_dim: spec.rotary_dim,
            scale: spec.scale,
            variant: spec.variant,
        })
    }

    /// `x`: `[tokens, hidden]`; `cos`/`sin`: the tokens' rotary rows; `cache`: this layer's
    /// (key, value) blocks.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        cache: &(Tensor, Tensor),
        meta: &AttentionMetadata,
    ) -> Result<Tensor> {
        let t = x.dim(0)?;
        let qn = self.num_heads * self.head_dim;
        // Reshape first, then narrow over heads: q, k and v stay strided views of the one
        // projection output (the CUDA rotary reads the strided rows without a copy).
        let heads = self.num_heads + 2 * self.num_kv_heads;
        let qkv = self.qkv.forward(x)?.reshape((t, heads, self.head_dim))?;
        let mut q = qkv.narrow(1, 0, self.num_heads)?;
        let mut k = qkv.narrow(1, self.num_heads, self.num_kv_heads)?;
        let v = qkv.narrow(1, self.num_heads + self.num_kv_heads, self.num_kv_heads)?;
        if let Some(n) = &self.q_norm {
            q = n.forward_heads(&q)?;
        }
        if let Some(n) = &self.k_norm {
            k = n.forward_heads(&k)?;
        }
        let q = self.rotate(&q, cos, sin)?;
        let k = self.rotate(&k, cos, sin)?;
        write_step_kv_cache(&cache.0, &k, meta)?;
        write_step_kv_cache(&cache.1, &v, meta)?;
        let out = paged_attention_variant(&q, &cache.0, &cache.1, meta, self.scale, self.variant)?;
        self.o.forward(&out.reshape((t, qn))?)
    }

    /// Rotary on the first `rotary_dim` dimensions of each head; the rest pass unchanged.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.rotary_dim == self.head_dim {
            return Ok(indus_kernels::apply_rotary(x, cos, sin)?);
        }
        let rd = self.rotary_dim;
        let rotated = indus_kernels::apply_rotary(&x.narrow(2, 0, rd)?, cos, sin)?;
        let passed = x.narrow(2, rd, self.head_dim - rd)?.contiguous()?;
        Ok(Tensor::cat(&[&rotated, &passed], 2)?)
    }

    pub fn weight_bytes(&self) -> usize {
        let norms = [&self.q_norm, &self.k_norm]
            .iter()
            .filter_map(|n| n.as_ref().map(RmsNorm::weight_bytes))
            .sum::<usize>();
        self.qkv.weight_bytes() + self.o.weight_bytes() + norms
    }

    pub fn quantized_types(&self, out: &mut BTreeSet<String>) {
        self.qkv.quantized_types(out);
        self.o.quantized_types(out);
    }
}
