//! The config of a BERT-family encoder (`config.json` of a Hugging Face checkpoint): BERT,
//! its small variants (all-MiniLM, BGE, E5) and XLM-RoBERTa (bge-m3, multilingual-e5).
//! They share one module layout and differ only in where position ids start.

use crate::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// Which layout family the checkpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    Bert,
    /// RoBERTa / XLM-RoBERTa: position ids start after the padding index.
    Roberta,
}

/// What the checkpoint's head is: a plain encoder (embeddings) or a sequence classifier
/// (cross-encoder rerankers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderTask {
    Embed,
    Classify { num_labels: usize },
}

#[derive(Debug, Clone)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    pub task: EncoderTask,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: u32,
    /// Embedding sizes the model was trained to be truncated to (Matryoshka); empty when
    /// the checkpoint does not say it supports truncation.
    pub matryoshka_dimensions: Vec<usize>,
    /// Whether truncation to any size is supported (`is_matryoshka: true`).
    pub is_matryoshka: bool,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "one")]
    type_vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<u32>,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    num_labels: Option<usize>,
    #[serde(default)]
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    is_matryoshka: bool,
    #[serde(default)]
    matryoshka_dimensions: Vec<usize>,
}

fn one() -> usize {
    1
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// Architectures (the `architectures` entry of config.json) served as encoders.
pub const ENCODER_ARCHITECTURES: &[&str] = &[
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "RobertaModel",
    "RobertaForSequenceClassification",
    "XLMRobertaModel",
    "XLMRobertaForSequenceClassification",
];

impl EncoderConfig {
    /// Whether a config.json describes an encoder this module serves, without failing on
    /// decoder configs (the loader asks before choosing which model type to build).
    pub fn is_encoder_config(text: &str) -> bool {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(default)]
            architectures: Vec<String>,
            model_type: Option<String>,
        }
        serde_json::from_str::<Probe>(text).is_ok_and(|p| {
            p.architectures
                .iter()
                .any(|a| ENCODER_ARCHITECTURES.contains(&a.as_str()))
                || (p.architectures.is_empty()
                    && matches!(
                        p.model_type.as_deref(),
                        Some("bert" | "roberta" | "xlm-roberta")
                    ))
        })
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|reason| ModelError::InvalidConfig {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let arch = raw.architectures.first().map(String::as_str);
        let kind = match (arch, raw.model_type.as_deref()) {
            (Some(a), _) if a.starts_with("Bert") => EncoderKind::Bert,
            (Some(a), _) if a.starts_with("Roberta") || a.starts_with("XLMRoberta") => {
                EncoderKind::Roberta
            }
            (None, Some("bert")) => EncoderKind::Bert,
            (None, Some("roberta" | "xlm-roberta")) => EncoderKind::Roberta,
            _ => {
                return Err(format!(
                    "not an encoder checkpoint (architectures {:?}); served encoders: {}",
                    raw.architectures,
                    ENCODER_ARCHITECTURES.join(", ")
                ));
            }
        };
        let classifier = arch.is_some_and(|a| a.ends_with("ForSequenceClassification"));
        let task = if classifier {
            let num_labels = raw
                .num_labels
                .or_else(|| raw.id2label.as_ref().map(|m| m.len()))
                .unwrap_or(2);
            EncoderTask::Classify { num_labels }
        } else {
            EncoderTask::Embed
        };
        if raw.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported for encoders (gelu only)",
                raw.hidden_act
            ));
        }
        if let Some(p) = raw.position_embedding_type.as_deref()
            && p != "absolute"
        {
            return Err(format!(
                "position_embedding_type `{p}` is not supported (absolute only)"
            ));
        }
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            ));
        }
        let pad_token_id = raw.pad_token_id.unwrap_or(match kind {
            EncoderKind::Bert => 0,
            EncoderKind::Roberta => 1,
        });
        Ok(Self {
            kind,
            task,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            max_position_embeddings: raw.max_position_embeddings,
            type_vocab_size: raw.type_vocab_size.max(1),
            layer_norm_eps: raw.layer_norm_eps,
            pad_token_id,
            matryoshka_dimensions: raw.matryoshka_dimensions,
            is_matryoshka: raw.is_matryoshka,
        })
    }

    /// Position id of a sequence's first token: RoBERTa counts from `pad_token_id + 1`.
    pub fn position_offset(&self) -> usize {
        match self.kind {
            EncoderKind::Bert => 0,
            EncoderKind::Roberta => self.pad_token_id as usize + 1,
        }
    }

    /// The longest input (special tokens included) the position table can hold.
    pub fn max_input_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_config_parses_as_bert_embedder() {
        let c = EncoderConfig::from_json(
            r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
            "intermediate_size":1536,"max_position_embeddings":512,"model_type":"bert",
            "num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,
            "type_vocab_size":2,"vocab_size":30522,"layer_norm_eps":1e-12}"#,
        )
        .unwrap();
        assert_eq!(c.kind, EncoderKind::Bert);
        assert_eq!(c.task, EncoderTask::Embed);
        assert_eq!(c.max_input_tokens(), 512);
    }

    #[test]
    fn xlmr_classifier_counts_labels_and_offsets_positions() {
        let c = EncoderConfig::from_json(
            r#"{"architectures":["XLMRobertaForSequenceClassification"],"hidden_size":8,
            "intermediate_size":16,"max_position_embeddings":514,"num_attention_heads":2,
            "num_hidden_layers":1,"pad_token_id":1,"vocab_size":100,"id2label":{"0":"LABEL_0"}}"#,
        )
        .unwrap();
        assert_eq!(c.kind, EncoderKind::Roberta);
        assert_eq!(c.task, EncoderTask::Classify { num_labels: 1 });
        assert_eq!(c.position_offset(), 2);
        assert_eq!(c.max_input_tokens(), 512);
    }

    #[test]
    fn decoder_configs_are_not_encoders() {
        assert!(!EncoderConfig::is_encoder_config(
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama"}"#
        ));
        assert!(EncoderConfig::is_encoder_config(
            r#"{"architectures":["XLMRobertaModel"]}"#
        ));
        let e = EncoderConfig::from_json(
            r#"{"architectures":["BertModel"],"hidden_act":"relu","hidden_size":8,
            "intermediate_size":16,"max_position_embeddings":8,"num_attention_heads":2,
            "num_hidden_layers":1,"vocab_size":10}"#,
        )
        .unwrap_err();
        assert!(e.contains("relu"), "{e}");
    }
}
