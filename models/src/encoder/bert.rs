//! The BERT-family encoder (BERT, MiniLM, BGE, E5, RoBERTa, XLM-RoBERTa): post-norm
//! transformer layers with absolute positions, run over a padded batch `[batch, len]` with
//! the padding masked out of attention. q/k/v are fused into one weight at load.

use super::config::{EncoderConfig, EncoderKind};
use crate::Result;
use crate::linear::Linear;
use crate::weights::WeightSource;
use candle_core::{Device, Tensor};
use indus_kernels::encoder_attention::padded_attention;
use indus_kernels::gelu::bias_gelu_erf;
use indus_kernels::layer_norm::bias_residual_layer_norm;

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(src: &WeightSource, prefix: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: src.get(&format!("{prefix}.weight"), &[size])?,
            bias: src.get(&format!("{prefix}.bias"), &[size])?,
            eps: eps as f32,
        })
    }

    /// `LayerNorm(x + bias + residual)`, fused.
    fn add_forward(&self, x: &Tensor, bias: &Tensor, residual: &Tensor) -> Result<Tensor> {
        Ok(bias_residual_layer_norm(
            x,
            bias,
            residual,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// One post-norm layer. Projections are loaded without their biases: each bias is added
/// inside the fused op that follows (attention, GELU, residual + LayerNorm).
struct Layer {
    qkv: Linear,
    qkv_bias: Tensor,
    attn_out: Linear,
    attn_out_bias: Tensor,
    attn_norm: LayerNorm,
    intermediate: Linear,
    intermediate_bias: Tensor,
    output: Linear,
    output_bias: Tensor,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(src: &WeightSource, cfg: &EncoderConfig, prefix: &str) -> Result<Self> {
        let h = cfg.hidden_size;
        let inter = cfg.intermediate_size;
        let names = |suffix: &str| -> Vec<String> {
            ["query", "key", "value"]
                .iter()
                .map(|p| format!("{prefix}.attention.self.{p}.{suffix}"))
                .collect()
        };
        // On AMX, split-bf16 tiles: ~2× candle's f32 GEMM at a client batch, within 1e-5.
        let weight = |name: &str, rows: usize, cols: usize| -> Result<Linear> {
            src.linear(&[format!("{prefix}.{name}.weight")], &[rows], cols, None)?
                .on_amx()
        };
        let bias = |name: &str, n: usize| src.get(&format!("{prefix}.{name}.bias"), &[n]);
        let qkv_bias = names("bias")
            .iter()
            .map(|n| src.get(n, &[h]))
            .collect::<Result<Vec<_>>>()?;
        let norm =
            |name: &str| LayerNorm::load(src, &format!("{prefix}.{name}"), h, cfg.layer_norm_eps);
        Ok(Self {
            qkv: src
                .linear(&names("weight"), &[h, h, h], h, None)?
                .on_amx()?,
            qkv_bias: Tensor::cat(&qkv_bias, 0)?,
            attn_out: weight("attention.output.dense", h, h)?,
            attn_out_bias: bias("attention.output.dense", h)?,
            attn_norm: norm("attention.output.LayerNorm")?,
            intermediate: weight("intermediate.dense", inter, h)?,
            intermediate_bias: bias("intermediate.dense", inter)?,
            output: weight("output.dense", h, inter)?,
            output_bias: bias("output.dense", h)?,
            output_norm: norm("output.LayerNorm")?,
        })
    }

    /// `x`: `[b * l, hidden]`; `lens`: each row's token count (the rest is padding).
    fn forward(&self, x: &Tensor, lens: &[usize], heads: usize) -> Result<Tensor> {
        let ctx = padded_attention(&self.qkv.forward(x)?, &self.qkv_bias, lens, heads)?;
        let attn =
            self.attn_norm
                .add_forward(&self.attn_out.forward(&ctx)?, &self.attn_out_bias, x)?;
        let inter = bias_gelu_erf(&self.intermediate.forward(&attn)?, &self.intermediate_bias)?;
        self.output_norm
            .add_forward(&self.output.forward(&inter)?, &self.output_bias, &attn)
    }
}

/// A loaded encoder; `forward` gives the last hidden state of every token.
pub struct Encoder {
    config: EncoderConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
}

impl Encoder {
    /// Loads the encoder under `prefix` (`""` for a bare `BertModel`, `bert` or `roberta`
    /// inside a `…ForSequenceClassification` checkpoint).
    pub(crate) fn load(
        src: &WeightSource,
        cfg: &EncoderConfig,
        prefix: &str,
        device: &Device,
    ) -> Result<Self> {
        let p = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}.{name}")
            }
        };
        let h = cfg.hidden_size;
        let layers = (0..cfg.num_layers)
            .map(|i| Layer::load(src, cfg, &p(&format!("encoder.layer.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: cfg.clone(),
            word: src.get(
                &p("embeddings.word_embeddings.weight"),
                &[cfg.vocab_size, h],
            )?,
            position: src.get(
                &p("embeddings.position_embeddings.weight"),
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: src.get(
                &p("embeddings.token_type_embeddings.weight"),
                &[cfg.type_vocab_size, h],
            )?,
            embed_norm: LayerNorm::load(src, &p("embeddings.LayerNorm"), h, cfg.layer_norm_eps)?,
            layers,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `ids`, `type_ids`: `[b, l]` u32, right-padded; `lens`: each row's token count.
    /// Returns `[b, l, hidden]` f32.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let h = self.config.hidden_size;
        let offset = self.config.position_offset();
        let words = self.word.index_select(&ids.flatten_all()?, 0)?;
        let types = self.token_type.index_select(&type_ids.flatten_all()?, 0)?;
        // Right padding: every sequence's tokens sit at positions 0.., and RoBERTa's
        // padding-aware position ids reduce to the same arange for them (padding rows
        // are masked and pooled away, whatever position they get).
        let positions = self.position.narrow(0, offset, l)?;
        let x = (words + types)?
            .reshape((b, l, h))?
            .broadcast_add(&positions)?
            .reshape((b * l, h))?;
        let mut x = self.embed_norm.forward(&x)?;
        for layer in &self.layers {
            x = layer.forward(&x, lens, self.config.num_heads)?;
        }
        Ok(x.reshape((b, l, h))?)
    }

    /// Which tensor-name prefix holds the encoder in a checkpoint: `""` for a bare model,
    /// `bert`/`roberta` under a task head.
    pub(crate) fn find_prefix(src: &WeightSource, cfg: &EncoderConfig) -> String {
        let candidates: &[&str] = match cfg.kind {
            EncoderKind::Bert => &["", "bert"],
            EncoderKind::Roberta => &["", "roberta"],
        };
        candidates
            .iter()
            .find(|p| {
                let name = if p.is_empty() {
                    "embeddings.word_embeddings.weight".to_string()
                } else {
                    format!("{p}.embeddings.word_embeddings.weight")
                };
                src.contains(&name)
            })
            .unwrap_or(&"")
            .to_string()
    }
}
