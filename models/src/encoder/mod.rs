//! Encoder models for retrieval: sentence embeddings (BERT, MiniLM, BGE, E5, XLM-R) and
//! cross-encoder rerankers (sequence classification). They run whole padded batches —
//! no KV cache, no decoding — so they live beside the paged decoder, not inside it.

pub mod bert;
pub mod config;
pub mod head;
pub mod pooling;
pub mod sentence;

pub use config::{EncoderConfig, EncoderKind, EncoderTask};
pub use pooling::Pooling;
pub use sentence::{SENTENCE_FILES, SentenceConfig};

use crate::files::ModelFiles;
use crate::weights::{LoadOptions, WeightSource};
use crate::{ModelError, Result};
use bert::Encoder;
use candle_core::{DType, Tensor};
use head::ClassifierHead;

/// One tokenized input: token ids (special tokens included) and their segment ids
/// (0 for the first text, 1 for the second of a pair; empty means all 0).
#[derive(Debug, Clone, Default)]
pub struct EncoderInput {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

/// An encoder checkpoint ready to run: embedding (pooled, maybe normalized) or
/// classification (logits of the first token).
pub struct PoolingModel {
    encoder: Encoder,
    head: Option<ClassifierHead>,
    sentence: SentenceConfig,
    weight_bytes: usize,
}

impl PoolingModel {
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let config_path = files
            .config
            .as_ref()
            .ok_or_else(|| ModelError::MissingFile("config.json".into()))?;
        let cfg = EncoderConfig::from_file(config_path)?;
        let dir = config_path
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let sentence = SentenceConfig::read(&dir)?;
        let src = WeightSource::new(&files.weights, opts)?;
        let prefix = Encoder::find_prefix(&src, &cfg);
        let encoder = Encoder::load(&src, &cfg, &prefix, &opts.device)?;
        let head = match cfg.task {
            EncoderTask::Embed => None,
            EncoderTask::Classify { num_labels } => {
                Some(ClassifierHead::load(&src, &cfg, &prefix, num_labels)?)
            }
        };
        let weight_bytes = files
            .weights
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len() as usize)
            .sum();
        Ok(Self {
            encoder,
            head,
            sentence,
            weight_bytes,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        self.encoder.config()
    }

    pub fn sentence(&self) -> &SentenceConfig {
        &self.sentence
    }

    /// Whether this is a cross-encoder (scores pairs) rather than an embedder.
    pub fn is_classifier(&self) -> bool {
        self.head.is_some()
    }

    /// Bytes of the checkpoint's weight files.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The longest input served, special tokens included: the sentence-transformers limit
    /// when set, never more than the position table holds.
    pub fn max_input_tokens(&self) -> usize {
        let table = self.config().max_input_tokens();
        self.sentence.max_seq_length.map_or(table, |m| m.min(table))
    }

    /// The embedding width.
    pub fn hidden_size(&self) -> usize {
        self.config().hidden_size
    }

    /// Runs one padded batch; returns `[b, l, hidden]` and the `[b, l]` mask.
    fn run(&self, inputs: &[EncoderInput]) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let b = inputs.len();
        let lens: Vec<usize> = inputs.iter().map(|i| i.ids.len()).collect();
        let l = lens.iter().copied().max().unwrap_or(0);
        if b == 0 || l == 0 {
            return Err(ModelError::InvalidInput(
                "an encoder batch needs at least one non-empty input".into(),
            ));
        }
        let max = self.config().max_input_tokens();
        if l > max {
            return Err(ModelError::InvalidInput(format!(
                "input of {l} tokens exceeds the position table ({max})"
            )));
        }
        let pad = self.config().pad_token_id;
        let mut ids = Vec::with_capacity(b * l);
        let mut types = Vec::with_capacity(b * l);
        let mut mask = Vec::with_capacity(b * l);
        for input in inputs {
            let n = input.ids.len();
            ids.extend_from_slice(&input.ids);
            ids.extend(std::iter::repeat_n(pad, l - n));
            for j in 0..l {
                types.push(input.type_ids.get(j).copied().unwrap_or(0));
                mask.push(if j < n { 1f32 } else { 0. });
            }
        }
        let dev = self.encoder.device();
        let ids = Tensor::from_vec(ids, (b, l), dev)?;
        let types = Tensor::from_vec(types, (b, l), dev)?;
        let mask = Tensor::from_vec(mask, (b, l), dev)?;
        let hidden = self.encoder.forward(&ids, &types, &lens)?;
        Ok((hidden, mask, lens))
    }

    /// Sentence embeddings of a batch, pooled (and normalized when the checkpoint says so).
    pub fn embed(&self, inputs: &[EncoderInput]) -> Result<Vec<Vec<f32>>> {
        let (hidden, mask, lens) = self.run(inputs)?;
        let mut pooled = self.sentence.pooling.apply(&hidden, &mask, &lens)?;
        if self.sentence.normalize {
            pooled = pooling::l2_normalize(&pooled)?;
        }
        Ok(pooled.to_dtype(DType::F32)?.to_vec2()?)
    }

    /// Classification logits `[b][labels]` of a cross-encoder; an error for embedders.
    pub fn classify(&self, inputs: &[EncoderInput]) -> Result<Vec<Vec<f32>>> {
        let head = self.head.as_ref().ok_or_else(|| {
            ModelError::InvalidInput("this model has no classification head".into())
        })?;
        let (hidden, _, _) = self.run(inputs)?;
        let first = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        Ok(head.forward(&first)?.to_dtype(DType::F32)?.to_vec2()?)
    }
}
