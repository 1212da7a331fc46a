//! Sequence-classification heads of cross-encoders: the score of a (query, document) pair
//! is read off the first token's hidden state. BERT goes through its pooler (dense + tanh)
//! then `classifier`; RoBERTa/XLM-R through `classifier.dense` (tanh) then
//! `classifier.out_proj`.

use super::config::{EncoderConfig, EncoderKind};
use crate::Result;
use crate::linear::Linear;
use crate::weights::WeightSource;
use candle_core::Tensor;

pub struct ClassifierHead {
    dense: Linear,
    out: Linear,
}

impl ClassifierHead {
    pub(crate) fn load(
        src: &WeightSource,
        cfg: &EncoderConfig,
        encoder_prefix: &str,
        num_labels: usize,
    ) -> Result<Self> {
        let h = cfg.hidden_size;
        let linear = |name: &str, rows: usize| -> Result<Linear> {
            src.linear(
                &[format!("{name}.weight")],
                &[rows],
                h,
                Some(&[format!("{name}.bias")]),
            )
        };
        let (dense, out) = match cfg.kind {
            EncoderKind::Bert => {
                let pooler = if encoder_prefix.is_empty() {
                    "pooler.dense".to_string()
                } else {
                    format!("{encoder_prefix}.pooler.dense")
                };
                (linear(&pooler, h)?, linear("classifier", num_labels)?)
            }
            EncoderKind::Roberta => (
                linear("classifier.dense", h)?,
                linear("classifier.out_proj", num_labels)?,
            ),
        };
        Ok(Self { dense, out })
    }

    /// `first`: `[b, hidden]` hidden states of each sequence's first token → `[b, labels]`.
    pub fn forward(&self, first: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.dense.forward(first)?.tanh()?)
    }
}
