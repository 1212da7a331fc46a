//! The Llama-family decoder layer (Llama 2/3/3.1/3.2, Mistral, Qwen2, Qwen3, Phi-3/3.5/4):
//! pre-norm attention and SwiGLU MLP, each behind an RMSNorm, with the residual add fused into
//! the next norm. The families differ only in options the config states: q/k/v bias (Qwen2),
//! per-head q/k norm (Qwen3), rope parameters (Phi-3's LongRoPE and partial rotary), tied
//! embeddings, and whether the checkpoint already fuses q/k/v and gate/up (Phi-3). Mixtral and
//! Qwen2/3-MoE are this layer with a sparse mixture of experts in place of the MLP (on the
//! layers their config makes sparse).
//!
//! Tensor names are Hugging Face's (`model.layers.N.self_attn.q_proj.weight`, ...); the GGUF
//! names they map to are in [`crate::gguf::arch`].

use crate::Result;
use crate::config::{Architecture, ModelConfig};
use crate::layers::moe::{MIXTRAL_NAMES, QWEN_NAMES};
use crate::layers::{Activation, Attention, AttentionSpec, GatedMlp, RmsNorm, SparseMoe};
use crate::rope::RopeRows;
use crate::weights::WeightSource;
use candle_core::Tensor;
use indus_kernels::AttentionMetadata;
use std::collections::BTreeSet;

/// GGUF names of a layer's tensors: (our suffix after `model.layers.N.`, GGUF's after `blk.N.`).
pub(crate) const GGUF_LAYER_NAMES: crate::gguf::arch::LayerNames = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    // Mixtral's and Qwen-MoE's routers, their experts stacked in one tensor per projection
    // ([experts, rows, cols]; read through `WeightSource::stacked_experts`), and Qwen2-MoE's
    // shared expert with its gate.
    ("block_sparse_moe.gate.weight", "ffn_gate_inp.weight"),
    ("block_sparse_moe.experts.w1.weight", "ffn_gate_exps.weight"),
    ("block_sparse_moe.experts.w3.weight", "ffn_up_exps.weight"),
    ("block_sparse_moe.experts.w2.weight", "ffn_down_exps.weight"),
    ("mlp.gate.weight", "ffn_gate_inp.weight"),
    ("mlp.experts.gate_proj.weight", "ffn_gate_exps.weight"),
    ("mlp.experts.up_proj.weight", "ffn_up_exps.weight"),
    ("mlp.experts.down_proj.weight", "ffn_down_exps.weight"),
    (
        "mlp.shared_expert.gate_proj.weight",
        "ffn_gate_shexp.weight",
    ),
    ("mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"),
    (
        "mlp.shared_expert.down_proj.weight",
        "ffn_down_shexp.weight",
    ),
    ("mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"),
];

pub(crate) struct DecoderLayer {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    mlp: FeedForward,
}

/// A layer's feed-forward block: the dense SwiGLU MLP or a sparse mixture of experts.
enum FeedForward {
    Dense(GatedMlp),
    Experts(SparseMoe),
}

impl FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(m) => m.forward(x),
            Self::Experts(m) => m.forward(x),
        }
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Self::Dense(m) => m.weight_bytes(),
            Self::Experts(m) => m.weight_bytes(),
        }
    }

    fn quantized_types(&self, out: &mut BTreeSet<String>) {
        match self {
            Self::Dense(m) => m.quantized_types(out),
            Self::Experts(m) => m.quantized_types(out),
        }
    }
}

/// The attention options of a Llama-family config.
pub(crate) fn attention_spec(cfg: &ModelConfig) -> AttentionSpec {
    AttentionSpec {
        hidden: cfg.hidden_size,
        num_heads: cfg.num_heads,
        num_kv_heads: cfg.num_kv_heads,
        head_dim: cfg.head_dim,
        rotary_dim: cfg.rotary_dim,
        fused_qkv: cfg.fused_checkpoint_projections,
        qkv_bias: cfg.qkv_bias,
        qk_norm_eps: cfg.architecture.has_qk_norm().then_some(cfg.rms_norm_eps),
        gemma_norms: false,
        scale: AttentionSpec::default_scale(cfg.head_dim),
        variant: Default::default(),
    }
}

impl DecoderLayer {
    pub(crate) fn load(src: &WeightSource, cfg: &ModelConfig, layer: usize) -> Result<Self> {
        let p = format!("model.layers.{layer}");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_norm: RmsNorm::load(src, &format!("{p}.input_layernorm.weight"), h, eps)?,
            attn: Attention::load(src, &attention_spec(cfg), &format!("{p}.self_attn"))?,
            post_attn_norm: RmsNorm::load(
                src,
                &format!("{p}.post_attention_layernorm.weight"),
                h,
                eps,
            )?,
            mlp: match &cfg.moe {
                Some(moe) if moe.sparse_layers[layer] => {
                    let (block, names) = match cfg.architecture {
                        Architecture::Mixtral => ("block_sparse_moe", MIXTRAL_NAMES),
                        _ => ("mlp", QWEN_NAMES),
                    };
                    FeedForward::Experts(SparseMoe::load(
                        src,
                        &format!("{p}.{block}"),
                        h,
                        moe,
                        names,
                    )?)
                }
                _ => FeedForward::Dense(GatedMlp::load(
                    src,
                    &format!("{p}.mlp"),
                    h,
                    cfg.intermediate_size,
                    Activation::Silu,
                    cfg.fused_checkpoint_projections,
                )?),
            },
        })
    }

    /// One layer over the flat batch. `x` is the previous layer's output (before its residual
    /// add) and `residual` the stream so far (`None` at the first layer, where `x` is the
    /// embedding). Returns this layer's output and the residual stream, still unadded.
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
        let (cos, sin) = &rope.global;
        let attn = self.attn.forward(&normed, cos, sin, cache, meta)?;
        let (normed, residual) = self.post_attn_norm.add_forward(&attn, &residual)?;
        Ok((self.mlp.forward(&normed)?, residual))
    }

    pub(crate) fn weight_bytes(&self) -> usize {
        self.input_norm.weight_bytes()
            + self.post_attn_norm.weight_bytes()
            + self.attn.weight_bytes()
            + self.mlp.weight_bytes()
    }

    pub(crate) fn quantized_types(&self, out: &mut BTreeSet<String>) {
        self.attn.quantized_types(out);
        self.mlp.quantized_types(out);
    }
}
