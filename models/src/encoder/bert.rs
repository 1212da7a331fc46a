//! The BERT-family encoder (BERT, MiniLM, BGE, E5, RoBERTa, XLM-RoBERTa): post-norm
//! transformer layers with absolute positions, run over a padded batch `[batch, len]` with
//! the padding masked out of attention. q/k/v are fused into one weight at load.

use super::config::{EncoderConfig, EncoderKind};
use crate::Result;
use crate::linear::Linear;
use crate::weights::WeightSource;
use candle_core::{DType, Device, Tensor};
use indus_kernels::gelu::bias_gelu_erf;

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

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    /// Without its bias: the bias is added inside the fused GELU.
    intermediate: Linear,
    intermediate_bias: Tensor,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(src: &WeightSource, cfg: &EncoderConfig, prefix: &str) -> Result<Self> {
        let h = cfg.hidden_size;
        let names = |suffix: &str| -> Vec<String> {
            ["query", "key", "value"]
                .iter()
                .map(|p| format!("{prefix}.attention.self.{p}.{suffix}"))
                .collect()
        };
        let dense = |name: &str, rows: usize, cols: usize| -> Result<Linear> {
            src.linear(
                &[format!("{prefix}.{name}.weight")],
                &[rows],
                cols,
                Some(&[format!("{prefix}.{name}.bias")]),
            )
        };
        Ok(Self {
            qkv: src.linear(&names("weight"), &[h, h, h], h, Some(&names("bias")))?,
            attn_out: dense("attention.output.dense", h, h)?,
            attn_norm: LayerNorm::load(
                src,
                &format!("{prefix}.attention.output.LayerNorm"),
                h,
                cfg.layer_norm_eps,
            )?,
            intermediate: src.linear(
                &[format!("{prefix}.intermediate.dense.weight")],
                &[cfg.intermediate_size],
                h,
                None,
            )?,
            intermediate_bias: src.get(
                &format!("{prefix}.intermediate.dense.bias"),
                &[cfg.intermediate_size],
            )?,
            output: dense("output.dense", h, cfg.intermediate_size)?,
            output_norm: LayerNorm::load(
                src,
                &format!("{prefix}.output.LayerNorm"),
                h,
                cfg.layer_norm_eps,
            )?,
        })
    }

    /// `x`: `[b * l, hidden]`; `bias`: `[b, 1, 1, l]` (0 for tokens, -inf-ish for padding).
    fn forward(
        &self,
        x: &Tensor,
        bias: &Tensor,
        b: usize,
        l: usize,
        heads: usize,
    ) -> Result<Tensor> {
        let h = x.dim(1)?;
        let d = h / heads;
        let qkv = self.qkv.forward(x)?.reshape((b, l, 3, heads, d))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scale = 1.0 / (d as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * l, h))?;
        let attn = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx)? + x)?)?;
        let inter = bias_gelu_erf(&self.intermediate.forward(&attn)?, &self.intermediate_bias)?;
        self.output_norm
            .forward(&(self.output.forward(&inter)? + attn)?)
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

    /// `ids`, `type_ids`: `[b, l]` u32 (right-padded); `mask`: `[b, l]` f32, 1 for tokens.
    /// Returns `[b, l, hidden]` f32.
    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
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
        // Padding gets a large negative score; a large finite value keeps a fully
        // masked row (impossible here: every input has a token) from turning into NaN.
        let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?.reshape((b, 1, 1, l))?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, b, l, self.config.num_heads)?;
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
