//! The Llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2), written once against the
//! paged-attention kernels. The whole batch is one flat run of tokens: prefill chunks and
//! decode tokens of many sequences side by side, told apart only by [`AttentionMetadata`].
//!
//! Load-time fusion: q/k/v become one weight and gate/up another, so each layer runs four
//! GEMMs, not seven.

use crate::config::ModelConfig;
use crate::files::ModelFiles;
use crate::gguf::{GgufFile, arch, weights::GgufWeights};
use crate::kv_cache::KvCache;
use crate::linear::{Embedding, Linear};
use crate::rope::RotaryTables;
use crate::weights::{LoadFormat, LoadOptions, WeightSource};
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use indus_kernels::{
    AttentionMetadata, fused_add_rms_norm, paged_attention, rms_norm, silu_mul, write_step_kv_cache,
};
use std::sync::Arc;

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

impl Attention {
    fn load(src: &WeightSource, cfg: &ModelConfig, prefix: &str) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let rows = [
            cfg.num_heads * d,
            cfg.num_kv_heads * d,
            cfg.num_kv_heads * d,
        ];
        let names = |suffix: &str| -> Vec<String> {
            ["q_proj", "k_proj", "v_proj"]
                .iter()
                .map(|p| format!("{prefix}.{p}.{suffix}"))
                .collect()
        };
        let biases = cfg.qkv_bias.then(|| names("bias"));
        let qkv = src.linear(&names("weight"), &rows, h, biases.as_deref())?;
        let o = src.linear(
            &[format!("{prefix}.o_proj.weight")],
            &[h],
            cfg.num_heads * d,
            None,
        )?;
        Ok(Self {
            qkv,
            o,
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
        write_step_kv_cache(&cache.0, &k, meta)?;
        write_step_kv_cache(&cache.1, &v, meta)?;
        let out = paged_attention(&q, &cache.0, &cache.1, meta, self.scale)?;
        self.o.forward(&out.reshape((t, qn))?)
    }
}

impl Mlp {
    fn load(src: &WeightSource, cfg: &ModelConfig, prefix: &str) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let names = vec![
            format!("{prefix}.gate_proj.weight"),
            format!("{prefix}.up_proj.weight"),
        ];
        let gate_up = src.linear(&names, &[i, i], h, None)?;
        let down = src.linear(&[format!("{prefix}.down_proj.weight")], &[h], i, None)?;
        Ok(Self { gate_up, down })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        self.down.forward(&silu_mul(&gate_up)?)
    }
}

impl CausalLm {
    /// Builds the model from a checkpoint's files (or dummy weights of its shape).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        if let Some(gguf) = &files.gguf {
            return Self::load_gguf(Arc::new(GgufFile::open(gguf)?), opts);
        }
        let config_path = files.config.as_ref().ok_or_else(|| {
            ModelError::MissingFile(std::path::PathBuf::from(format!(
                "{}/config.json",
                files.name
            )))
        })?;
        let config = ModelConfig::from_file(config_path)?;
        Self::load_with_config(config, &files.weights, opts)
    }

    /// Builds the model from a GGUF file: config from its metadata, weights kept in their
    /// block types (dense with `opts.dequantize`).
    pub fn load_gguf(file: Arc<GgufFile>, opts: &LoadOptions) -> Result<Self> {
        let config = arch::config_from_gguf(&file)?;
        let (_, layout, _) = arch::architecture(&file)?;
        Self::load_gguf_shared(file, config, layout, opts)
    }

    fn load_gguf_shared(
        file: Arc<GgufFile>,
        config: ModelConfig,
        layout: arch::QkLayout,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let src = WeightSource::gguf(GgufWeights {
            file,
            layout,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            dtype: opts.dtype,
            device: opts.device.clone(),
            dequantize: opts.dequantize,
        });
        Self::build(config, &src, opts)
    }

    pub fn load_with_config(
        config: ModelConfig,
        weights: &[std::path::PathBuf],
        opts: &LoadOptions,
    ) -> Result<Self> {
        if opts.format == LoadFormat::Gguf {
            return Err(ModelError::Weight {
                name: "--load-format gguf".into(),
                reason: "needs a .gguf file (a path to one, or a directory holding one)".into(),
            });
        }
        let src = WeightSource::new(weights, opts)?;
        Self::build(config, &src, opts)
    }

    fn build(config: ModelConfig, src: &WeightSource, opts: &LoadOptions) -> Result<Self> {
        let src = &src;
        let cfg = &config;
        let h = cfg.hidden_size;
        let embed = src.embedding("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(DecoderLayer {
                    input_norm: src.get(&format!("{p}.input_layernorm.weight"), &[h])?,
                    attn: Attention::load(src, cfg, &format!("{p}.self_attn"))?,
                    post_attn_norm: src
                        .get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    mlp: Mlp::load(src, cfg, &format!("{p}.mlp"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = src.get("model.norm.weight", &[h])?;
        let lm_head = if cfg.tie_word_embeddings || !src.contains("lm_head.weight") {
            if !cfg.tie_word_embeddings {
                return Err(ModelError::Weight {
                    name: "lm_head.weight".into(),
                    reason: "missing and tie_word_embeddings is false".into(),
                });
            }
            embed.as_linear()?
        } else {
            src.linear(&["lm_head.weight".to_string()], &[cfg.vocab_size], h, None)?
        };
        let rotary = RotaryTables::new(cfg, cfg.max_position_embeddings, &opts.device)?;
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
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

    /// Bytes the weights take in memory (quantized bytes for quantized layers), counting a
    /// tied output projection once.
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                crate::linear::tensor_bytes(&l.input_norm)
                    + crate::linear::tensor_bytes(&l.post_attn_norm)
                    + l.attn.qkv.weight_bytes()
                    + l.attn.o.weight_bytes()
                    + l.mlp.gate_up.weight_bytes()
                    + l.mlp.down.weight_bytes()
            })
            .sum();
        let head = if self.config.tie_word_embeddings {
            0
        } else {
            self.lm_head.weight_bytes()
        };
        layers + self.embed.weight_bytes() + head + crate::linear::tensor_bytes(&self.final_norm)
    }

    /// The quantized block types the weights keep, e.g. `Some("Q4_1+Q8_0")`; `None` when
    /// every weight is dense.
    pub fn quantization(&self) -> Option<String> {
        let mut types = std::collections::BTreeSet::new();
        self.embed.quantized_types(&mut types);
        self.lm_head.quantized_types(&mut types);
        for l in &self.layers {
            for lin in [&l.attn.qkv, &l.attn.o, &l.mlp.gate_up, &l.mlp.down] {
                lin.quantized_types(&mut types);
            }
        }
        if types.is_empty() {
            return None;
        }
        Some(types.into_iter().collect::<Vec<_>>().join("+"))
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
