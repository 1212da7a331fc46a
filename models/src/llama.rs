//! The Llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2), written once against the
//! paged-attention kernels. The whole batch is one flat run of tokens: prefill chunks and
//! decode tokens of many sequences side by side, told apart only by [`AttentionMetadata`].
//!
//! Load-time fusion: q/k/v become one weight and gate/up another, so each layer runs four
//! GEMMs, not seven.

use crate::config::ModelConfig;
use crate::files::ModelFiles;
use crate::kv_cache::KvCache;
use crate::rope::RotaryTables;
use crate::weights::{LoadOptions, WeightSource};
use crate::{ModelError, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear};
use indus_kernels::{
    AttentionMetadata, fused_add_rms_norm, paged_attention, rms_norm, silu_mul, write_kv_cache,
};

/// One step's inputs, already on the model's device.
pub struct StepInput<'a> {
    /// `[num_tokens]` u32.
    pub input_ids: &'a Tensor,
    /// `[num_tokens]` u32, absolute position of each token in its sequence.
    pub positions: &'a Tensor,
    pub attention: &'a AttentionMetadata,
    /// `[num_outputs]` u32: rows of the flat batch whose logits are wanted (each sequence's
    /// last token when it samples this step).
    pub logits_indices: &'a Tensor,
}

struct Attention {
    qkv: Linear,
    o: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

struct Mlp {
    gate_up: Linear,
    down: Linear,
}

struct DecoderLayer {
    input_norm: Tensor,
    attn: Attention,
    post_attn_norm: Tensor,
    mlp: Mlp,
}

pub struct CausalLm {
    config: ModelConfig,
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    final_norm: Tensor,
    lm_head: Linear,
    rotary: RotaryTables,
    eps: f32,
    dtype: DType,
    device: Device,
}

/// Concatenates row-blocks of weights loaded separately (or draws the fused tensor at once
/// for dummy weights: same shape, no concatenation cost).
fn fused(src: &WeightSource, names: &[String], rows: &[usize], cols: usize) -> Result<Tensor> {
    if src.is_dummy() {
        return src.get(&names[0], &[rows.iter().sum(), cols]);
    }
    let parts = names
        .iter()
        .zip(rows)
        .map(|(n, &r)| src.get(n, &[r, cols]))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

fn fused_bias(src: &WeightSource, names: &[String], rows: &[usize]) -> Result<Tensor> {
    if src.is_dummy() {
        return src.get(&names[0], &[rows.iter().sum()]);
    }
    let parts = names
        .iter()
        .zip(rows)
        .map(|(n, &r)| src.get(n, &[r]))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

impl Attention {
    fn load(src: &WeightSource, cfg: &ModelConfig, prefix: &str) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let rows = [
            cfg.num_heads * d,
            cfg.num_kv_heads * d,
            cfg.num_kv_heads * d,
        ];
        let names: Vec<String> = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .map(|p| format!("{prefix}.{p}.weight"))
            .collect();
        let weight = fused(src, &names, &rows, h)?;
        let bias = if cfg.qkv_bias {
            let names: Vec<String> = ["q_proj", "k_proj", "v_proj"]
                .iter()
                .map(|p| format!("{prefix}.{p}.bias"))
                .collect();
            Some(fused_bias(src, &names, &rows)?)
        } else {
            None
        };
        let o = src.get(&format!("{prefix}.o_proj.weight"), &[h, cfg.num_heads * d])?;
        Ok(Self {
            qkv: Linear::new(weight, bias),
            o: Linear::new(o, None),
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
        })
    }

    fn forward(
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
        let q = qkv.narrow(1, 0, self.num_heads)?;
        let k = qkv.narrow(1, self.num_heads, self.num_kv_heads)?;
        let v = qkv.narrow(1, self.num_heads + self.num_kv_heads, self.num_kv_heads)?;
        let q = indus_kernels::apply_rotary(&q, cos, sin)?;
        let k = indus_kernels::apply_rotary(&k, cos, sin)?;
        write_kv_cache(&cache.0, &k, &meta.slot_mapping)?;
        write_kv_cache(&cache.1, &v, &meta.slot_mapping)?;
        let out = paged_attention(&q, &cache.0, &cache.1, meta, self.scale)?;
        Ok(self.o.forward(&out.reshape((t, qn))?)?)
    }
}

impl Mlp {
    fn load(src: &WeightSource, cfg: &ModelConfig, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let names = vec![
            format!("{prefix}.gate_proj.weight"),
            format!("{prefix}.up_proj.weight"),
        ];
        let gate_up = fused(src, &names, &[i, i], h)?;
        let down = src.get(&format!("{prefix}.down_proj.weight"), &[h, i])?;
        Ok(Self {
            gate_up: Linear::new(gate_up, None),
            down: Linear::new(down, None),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        Ok(self.down.forward(&silu_mul(&gate_up)?)?)
    }
}

impl CausalLm {
    /// Builds the model from a checkpoint's files (or dummy weights of its shape).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_file(&files.config)?;
        Self::load_with_config(config, &files.weights, opts)
    }

    pub fn load_with_config(
        config: ModelConfig,
        weights: &[std::path::PathBuf],
        opts: &LoadOptions,
    ) -> Result<Self> {
        let src = WeightSource::new(weights, opts)?;
        let cfg = &config;
        let h = cfg.hidden_size;
        let embed_w = src.get("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(DecoderLayer {
                    input_norm: src.get(&format!("{p}.input_layernorm.weight"), &[h])?,
                    attn: Attention::load(&src, cfg, &format!("{p}.self_attn"))?,
                    post_attn_norm: src
                        .get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    mlp: Mlp::load(&src, cfg, &format!("{p}.mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = src.get("model.norm.weight", &[h])?;
        let lm_head_w = if cfg.tie_word_embeddings || !src.contains("lm_head.weight") {
            if !cfg.tie_word_embeddings {
                return Err(ModelError::Weight {
                    name: "lm_head.weight".into(),
                    reason: "missing and tie_word_embeddings is false".into(),
                });
            }
            embed_w.clone()
        } else {
            src.get("lm_head.weight", &[cfg.vocab_size, h])?
        };
        let rotary = RotaryTables::new(cfg, cfg.max_position_embeddings, &opts.device)?;
        Ok(Self {
            embed: Embedding::new(embed_w, h),
            layers,
            final_norm,
            lm_head: Linear::new(lm_head_w, None),
            rotary,
            eps: cfg.rms_norm_eps as f32,
            dtype: opts.dtype,
            device: opts.device.clone(),
            config,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Allocates a KV cache of `num_blocks` blocks for this model.
    pub fn new_kv_cache(&self, num_blocks: usize, block_size: usize) -> Result<KvCache> {
        KvCache::new(
            &self.config,
            num_blocks,
            block_size,
            self.dtype,
            &self.device,
        )
    }

    /// One forward pass over a flat mixed batch; writes the batch's K/V into `cache` and
    /// returns f32 logits `[num_outputs, vocab]` for the rows named by `logits_indices`.
    pub fn forward(&self, step: &StepInput<'_>, cache: &KvCache) -> Result<Tensor> {
        let (cos, sin) = self.rotary.gather(step.positions)?;
        let mut x = self.embed.forward(step.input_ids)?;
        let mut residual: Option<Tensor> = None;
        for (layer, kv) in self.layers.iter().zip(&cache.layers) {
            let normed = match &residual {
                None => {
                    residual = Some(x.clone());
                    rms_norm(&x, &layer.input_norm, self.eps)?
                }
                Some(r) => {
                    let (n, r) = fused_add_rms_norm(&x, r, &layer.input_norm, self.eps)?;
                    residual = Some(r);
                    n
                }
            };
            let attn = layer
                .attn
                .forward(&normed, &cos, &sin, kv, step.attention)?;
            let r = residual
                .take()
                .ok_or_else(|| candle_core::Error::Msg("no residual".into()))?;
            let (normed, r) = fused_add_rms_norm(&attn, &r, &layer.post_attn_norm, self.eps)?;
            residual = Some(r);
            x = layer.mlp.forward(&normed)?;
        }
        let hidden = match residual {
            Some(r) => fused_add_rms_norm(&x, &r, &self.final_norm, self.eps)?.0,
            None => rms_norm(&x, &self.final_norm, self.eps)?,
        };
        if step.logits_indices.dim(0)? == 0 {
            // A step of prefill chunks only: nothing to sample, skip the LM head.
            return Ok(Tensor::zeros(
                (0, self.config.vocab_size),
                DType::F32,
                &self.device,
            )?);
        }
        let hidden = hidden.index_select(step.logits_indices, 0)?;
        Ok(self.lm_head.forward(&hidden)?.to_dtype(DType::F32)?)
    }
}
