//! A decoder-only causal language model: embedding, a stack of an architecture's decoder
//! layers ([`crate::llama`], [`crate::gemma`]), final norm, LM head; and its loading from safetensors, GGUF or
//! dummy weights. The whole batch is one flat run of tokens: prefill chunks and decode tokens
//! of many sequences side by side, told apart only by [`AttentionMetadata`].
//!
//! Load-time fusion: q/k/v become one weight and gate/up another, so each layer runs four
//! GEMMs, not seven.

use crate::config::ModelConfig;
use crate::files::ModelFiles;
use crate::gguf::{GgufFile, arch, weights::GgufWeights};
use crate::kv_cache::KvCache;
use crate::layers::RmsNorm;
use crate::linear::{Embedding, Linear};
use crate::rope::{RopeRows, RotaryTables};
use crate::weights::{LoadFormat, LoadOptions, WeightSource};
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use indus_kernels::AttentionMetadata;
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

pub struct CausalLm {
    config: ModelConfig,
    embed: Embedding,
    layers: Vec<Block>,
    final_norm: RmsNorm,
    lm_head: Linear,
    rotary: RotaryTables,
    /// Gemma 3's rope of the sliding layers.
    rotary_local: Option<RotaryTables>,
    /// Gemma: embeddings times √hidden, rounded to the model dtype as transformers does.
    embed_scale: Option<f64>,
    /// Gemma 2: `cap * tanh(logit / cap)`.
    final_softcap: Option<f64>,
    dtype: DType,
    device: Device,
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
        let (architecture, layout, _) = arch::architecture(&file)?;
        let src = WeightSource::gguf(GgufWeights {
            file,
            layout,
            layer_names: arch::layer_names(architecture),
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            dtype: opts.dtype,
            device: opts.device.clone(),
            dequantize: opts.dequantize,
        });
        Self::build(config, &src, opts)
    }

    /// Builds the model from `config` and safetensors `weights`, with the int4 quantization
    /// (GPTQ / AWQ) that the config.json beside the shards declares, if any.
    pub fn load_with_config(
        config: ModelConfig,
        weights: &[std::path::PathBuf],
        opts: &LoadOptions,
    ) -> Result<Self> {
        let quant = if opts.format == LoadFormat::Dummy {
            None
        } else {
            crate::quant::QuantConfig::beside(weights)?
        };
        Self::load_with_quantization(config, quant, weights, opts)
    }

    /// As [`Self::load_with_config`], with the quantization given (`None`: every layer
    /// dense; layers the checkpoint stores packed then fail to load).
    pub fn load_with_quantization(
        config: ModelConfig,
        quant: Option<crate::quant::QuantConfig>,
        weights: &[std::path::PathBuf],
        opts: &LoadOptions,
    ) -> Result<Self> {
        if opts.format == LoadFormat::Gguf {
            return Err(ModelError::Weight {
                name: "--load-format gguf".into(),
                reason: "needs a .gguf file (a path to one, or a directory holding one)".into(),
            });
        }
        let src = WeightSource::with_quantization(weights, opts, quant)?;
        Self::build(config, &src, opts)
    }

    fn build(config: ModelConfig, src: &WeightSource, opts: &LoadOptions) -> Result<Self> {
        let cfg = &config;
        let h = cfg.hidden_size;
        let embed = src.embedding("model.embed_tokens.weight", &[cfg.vocab_size, h])?;
        let layers = (0..cfg.num_layers)
            .map(|i| match &cfg.gemma {
                Some(g) => Ok(Block::Gemma(crate::gemma::DecoderLayer::load(
                    src, cfg, g, i,
                )?)),
                None => Ok(Block::Llama(crate::llama::DecoderLayer::load(src, cfg, i)?)),
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = match cfg.gemma {
            Some(_) => RmsNorm::load_gemma(src, "model.norm.weight", h, cfg.rms_norm_eps)?,
            None => RmsNorm::load(src, "model.norm.weight", h, cfg.rms_norm_eps)?,
        };
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
        let rotary_local = match cfg.gemma.as_ref().and_then(|g| g.rope_local_theta) {
            Some(theta) => {
                let local = ModelConfig {
                    rope_theta: theta,
                    rope_scaling: None,
                    rope_freq_factors: None,
                    ..cfg.clone()
                };
                Some(RotaryTables::new(
                    &local,
                    cfg.max_position_embeddings,
                    &opts.device,
                )?)
            }
            None => None,
        };
        let embed_scale = cfg
            .gemma
            .as_ref()
            .map(|_| round_to_dtype((h as f64).sqrt(), opts.dtype));
        let final_softcap = cfg.gemma.as_ref().and_then(|g| g.final_logit_softcapping);
        Ok(Self {
            embed,
            layers,
            final_norm,
            lm_head,
            rotary,
            rotary_local,
            embed_scale,
            final_softcap,
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
        let layers: usize = self.layers.iter().map(Block::weight_bytes).sum();
        let head = if self.config.tie_word_embeddings {
            0
        } else {
            self.lm_head.weight_bytes()
        };
        layers + self.embed.weight_bytes() + head + self.final_norm.weight_bytes()
    }

    /// The quantized block types the weights keep, e.g. `Some("Q4_1+Q8_0")`; `None` when
    /// every weight is dense.
    pub fn quantization(&self) -> Option<String> {
        let mut types = std::collections::BTreeSet::new();
        self.embed.quantized_types(&mut types);
        self.lm_head.quantized_types(&mut types);
        for l in &self.layers {
            l.quantized_types(&mut types);
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
        let hidden = self.forward_hidden(step, cache)?;
        if hidden.dim(0)? == 0 {
            // A step of prefill chunks only: nothing to sample, skip the LM head.
            return Ok(Tensor::zeros(
                (0, self.config.vocab_size),
                DType::F32,
                &self.device,
            )?);
        }
        self.logits(&hidden)
    }

    /// f32 logits `[rows, vocab]` of final hidden states from [`Self::forward_hidden`].
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(hidden)?.to_dtype(DType::F32)?;
        Ok(match self.final_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// The forward pass up to the final norm: `[num_outputs, hidden]` (model dtype) for
    /// the rows named by `logits_indices` — what a decoder embedding model pools (its last
    /// token), and what the LM head turns into logits.
    pub fn forward_hidden(&self, step: &StepInput<'_>, cache: &KvCache) -> Result<Tensor> {
        let rope = RopeRows {
            global: self.rotary.gather(step.positions)?,
            local: self
                .rotary_local
                .as_ref()
                .map(|r| r.gather(step.positions))
                .transpose()?,
        };
        let mut x = self.embed.forward(step.input_ids)?;
        if let Some(scale) = self.embed_scale {
            x = x.affine(scale, 0.0)?;
        }
        let mut residual: Option<Tensor> = None;
        for (layer, kv) in self.layers.iter().zip(&cache.layers) {
            let (out, r) = layer.forward(&x, residual.as_ref(), &rope, kv, step.attention)?;
            x = out;
            residual = Some(r);
        }
        let hidden = match &residual {
            Some(r) => self.final_norm.add_forward(&x, r)?.0,
            None => self.final_norm.forward(&x)?,
        };
        Ok(hidden.index_select(step.logits_indices, 0)?)
    }
}

/// One decoder layer of whichever architecture the model is.
enum Block {
    Llama(crate::llama::DecoderLayer),
    Gemma(crate::gemma::DecoderLayer),
}

impl Block {
    fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        rope: &RopeRows,
        cache: &(Tensor, Tensor),
        meta: &AttentionMetadata,
    ) -> Result<(Tensor, Tensor)> {
        match self {
            Block::Llama(l) => l.forward(x, residual, rope, cache, meta),
            Block::Gemma(l) => l.forward(x, residual, rope, cache, meta),
        }
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Block::Llama(l) => l.weight_bytes(),
            Block::Gemma(l) => l.weight_bytes(),
        }
    }

    fn quantized_types(&self, out: &mut std::collections::BTreeSet<String>) {
        match self {
            Block::Llama(l) => l.quantized_types(out),
            Block::Gemma(l) => l.quantized_types(out),
        }
    }
}

/// `v` as the nearest value of `dtype` (transformers multiplies by `sqrt(hidden)` cast to the
/// weights' dtype first).
fn round_to_dtype(v: f64, dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        DType::F16 => half::f16::from_f64(v).to_f64(),
        DType::F32 => v as f32 as f64,
        _ => v,
    }
}
