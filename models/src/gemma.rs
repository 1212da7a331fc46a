//! The Gemma 2 / Gemma 3 decoder layer: RMSNorms of the `1 + w` kind around both sub-layers
//! (input and post-attention norm around attention, pre- and post-feed-forward norm around
//! the GeGLU MLP), attention scaled by `query_pre_attn_scalar^-1/2`, sliding-window layers
//! interleaved with global ones, Gemma 2's score soft-cap, Gemma 3's per-head q/k norm and
//! local rope. The model-level parts (embeddings scaled by √hidden, the final-logit soft-cap,
//! tied embeddings) are in [`crate::causal_lm`].
//!
//! Tensor names are Hugging Face's; the GGUF names they map to are in [`crate::gguf::arch`].

use crate::Result;
use crate::config::{Architecture, GemmaOptions, ModelConfig};
use crate::layers::{Activation, Attention, AttentionSpec, GatedMlp, RmsNorm};
use crate::rope::RopeRows;
use crate::weights::WeightSource;
use candle_core::Tensor;
use indus_kernels::{AttentionMetadata, AttentionVariant};
use std::collections::BTreeSet;

/// GGUF names of a layer's tensors (llama.cpp's gemma2/gemma3 names; its converter stores the
/// norms as `1 + w`, see [`RmsNorm::load_gemma`]).
pub(crate) const GGUF_LAYER_NAMES: crate::gguf::arch::LayerNames = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    (
        "post_attention_layernorm.weight",
        "post_attention_norm.weight",
    ),
    ("pre_feedforward_layernorm.weight", "ffn_norm.weight"),
    ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

pub(crate) struct DecoderLayer {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_ffn_norm: RmsNorm,
    mlp: GatedMlp,
    post_ffn_norm: RmsNorm,
    /// A sliding-window layer (Gemma 3's take the local rope).
    sliding: bool,
}

impl DecoderLayer {
    pub(crate) fn load(
        src: &WeightSource,
        cfg: &ModelConfig,
        g: &GemmaOptions,
        layer: usize,
    ) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let norm = |n: &str| RmsNorm::load_gemma(src, &format!("{p}.{n}.weight"), h, eps);
        let window = g.layer_windows.get(layer).copied().flatten();
        let spec = AttentionSpec {
            hidden: h,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            rotary_dim: cfg.rotary_dim,
            fused_qkv: false,
            qkv_bias: cfg.qkv_bias,
            qk_norm_eps: (cfg.architecture == Architecture::Gemma3).then_some(eps),
            gemma_norms: true,
            scale: (1.0 / g.query_pre_attn_scalar.sqrt()) as f32,
            variant: AttentionVariant {
                window,
                softcap: g.attn_logit_softcapping.map(|c| c as f32),
            },
        };
        Ok(Self {
            input_norm: norm("input_layernorm")?,
            attn: Attention::load(src, &spec, &format!("{p}.self_attn"))?,
            post_attn_norm: norm("post_attention_layernorm")?,
            pre_ffn_norm: norm("pre_feedforward_layernorm")?,
            mlp: GatedMlp::load(
                src,
                &format!("{p}.mlp"),
                h,
                cfg.intermediate_size,
                Activation::GeluTanh,
                false,
            )?,
            post_ffn_norm: norm("post_feedforward_layernorm")?,
            sliding: window.is_some(),
        })
    }

    /// Same contract as [`crate::llama::DecoderLayer::forward`]: `x + residual` is the stream
    /// entering the layer; returns the MLP branch's output and the stream before it.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        rope: &RopeRows,
        cache: &(Tensor, Tensor),
        meta: &AttentionMetadata,
    ) -> Result<(Tensor, Tensor)> {
        let (normed, residual) = match residual {
            None => (self.input_norm.forward(x)?, x.clone()),
            Some(r) => self.input_norm.add_forward(x, r)?,
        };
        let (cos, sin) = match (&rope.local, self.sliding) {
            (Some(local), true) => local,
            _ => &rope.global,
        };
        let attn = self.attn.forward(&normed, cos, sin, cache, meta)?;
        let attn = self.post_attn_norm.forward(&attn)?;
        let (normed, residual) = self.pre_ffn_norm.add_forward(&attn, &residual)?;
        let out = self.post_ffn_norm.forward(&self.mlp.forward(&normed)?)?;
        Ok((out, residual))
    }

    pub(crate) fn weight_bytes(&self) -> usize {
        [
            &self.input_norm,
            &self.post_attn_norm,
            &self.pre_ffn_norm,
            &self.post_ffn_norm,
        ]
        .iter()
        .map(|n| n.weight_bytes())
        .sum::<usize>()
            + self.attn.weight_bytes()
            + self.mlp.weight_bytes()
    }

    pub(crate) fn quantized_types(&self, out: &mut BTreeSet<String>) {
        self.attn.quantized_types(out);
        self.mlp.quantized_types(out);
    }
}
