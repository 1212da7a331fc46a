//! `config.json` of a Hugging Face checkpoint, reduced to what the Llama family needs.

use crate::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// Checkpoint families served by [`crate::CausalLm`]. They share one decoder; they differ in
/// qkv bias, tied embeddings and rope defaults, all of which the config states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    #[serde(default)]
    rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default)]
    bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    2048
}

/// The model hyper-parameters the decoder is built from.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Per-frequency divisors of the rotary inverse frequencies (GGUF's `rope_freqs` tensor,
    /// how llama.cpp stores Llama 3.1-style scaling); applied after `rope_scaling`.
    pub rope_freq_factors: Option<Vec<f32>>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// Mistral v0.1's sliding window; the engine caps the context to it, since a full
    /// attention over at most `window` tokens is exactly the sliding-window result.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Token ids in configs come as a number or a list of numbers.
pub fn token_ids_from_json(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            ModelError::InvalidConfig { reason, .. } => ModelError::InvalidConfig {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let invalid = |reason: String| ModelError::InvalidConfig {
            path: "config.json".into(),
            reason,
        };
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let architecture = detect_architecture(&raw)?;
        if raw.num_attention_heads == 0
            || !raw.hidden_size.is_multiple_of(raw.num_attention_heads) && raw.head_dim.is_none()
        {
            return Err(invalid(
                "hidden_size must be a multiple of num_attention_heads".into(),
            ));
        }
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_kv_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_kv_heads) {
            return Err(invalid(
                "num_attention_heads must be a multiple of num_key_value_heads".into(),
            ));
        }
        let head_dim = raw
            .head_dim
            .unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if !head_dim.is_multiple_of(2) {
            return Err(invalid(format!(
                "head_dim {head_dim} must be even for rotary embeddings"
            )));
        }
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(invalid(format!(
                "hidden_act `{act}` is not supported (only silu)"
            )));
        }
        if let Some(scaling) = &raw.rope_scaling
            && !matches!(scaling.rope_type.as_str(), "llama3" | "linear" | "default")
        {
            return Err(invalid(format!(
                "rope_scaling type `{}` is not supported (llama3, linear)",
                scaling.rope_type
            )));
        }
        let sliding_window = match architecture {
            Architecture::Qwen2 if raw.use_sliding_window != Some(true) => None,
            _ => raw.sliding_window,
        };
        Ok(Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: raw.rope_theta,
            rope_scaling: raw.rope_scaling.clone(),
            rope_freq_factors: None,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings: raw
                .tie_word_embeddings
                .unwrap_or(architecture == Architecture::Qwen2),
            qkv_bias: raw
                .attention_bias
                .unwrap_or(architecture == Architecture::Qwen2),
            sliding_window,
            bos_token_id: token_ids_from_json(raw.bos_token_id.as_ref())
                .first()
                .copied(),
            eos_token_ids: token_ids_from_json(raw.eos_token_id.as_ref()),
        })
    }

    /// The longest context this checkpoint can serve correctly.
    pub fn max_context(&self) -> usize {
        match self.sliding_window {
            Some(w) => w.min(self.max_position_embeddings),
            None => self.max_position_embeddings,
        }
    }

    /// Parameter count, for memory planning and roofline figures.
    pub fn num_parameters(&self) -> usize {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let qkv = h * (self.num_heads + 2 * self.num_kv_heads) * d;
        let o = self.num_heads * d * h;
        let per_layer = qkv + o + 3 * h * i + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        per_layer * self.num_layers + embed + head + h
    }

    /// KV-cache bytes one token takes across all layers.
    pub fn kv_bytes_per_token(&self, dtype_size: usize) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_size
    }
}

fn detect_architecture(raw: &RawConfig) -> Result<Architecture> {
    let names: Vec<&str> = raw.architectures.iter().map(String::as_str).collect();
    let by_name = names.iter().find_map(|a| match *a {
        "LlamaForCausalLM" => Some(Architecture::Llama),
        "MistralForCausalLM" => Some(Architecture::Mistral),
        "Qwen2ForCausalLM" => Some(Architecture::Qwen2),
        _ => None,
    });
    let by_type = match raw.model_type.as_deref() {
        Some("llama") => Some(Architecture::Llama),
        Some("mistral") => Some(Architecture::Mistral),
        Some("qwen2") => Some(Architecture::Qwen2),
        _ => None,
    };
    by_name
        .or(if names.is_empty() { by_type } else { None })
        .ok_or_else(|| {
            let mut seen = raw.architectures.clone();
            if let Some(t) = &raw.model_type {
                seen.push(format!("model_type={t}"));
            }
            ModelError::UnsupportedArchitecture(seen)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3_8B: &str = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":4096,
      "intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
      "num_key_value_heads":8,"vocab_size":128256,"rms_norm_eps":1e-5,"rope_theta":500000.0,
      "max_position_embeddings":131072,"tie_word_embeddings":false,"bos_token_id":128000,
      "eos_token_id":[128001,128008,128009],
      "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
      "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;

    #[test]
    fn parses_llama3_and_counts_parameters() {
        let c = ModelConfig::from_json(LLAMA3_8B).unwrap();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.head_dim, 128);
        assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009]);
        assert_eq!(c.rope_scaling.as_ref().unwrap().rope_type, "llama3");
        // Llama-3-8B has 8.03 B parameters.
        let p = c.num_parameters() as f64 / 1e9;
        assert!((p - 8.03).abs() < 0.01, "{p}");
    }

    #[test]
    fn mistral_sliding_window_caps_the_context() {
        let text = r#"{"architectures":["MistralForCausalLM"],"hidden_size":4096,
          "intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
          "num_key_value_heads":8,"vocab_size":32000,"rms_norm_eps":1e-5,
          "rope_theta":10000.0,"max_position_embeddings":32768,"sliding_window":4096}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert_eq!(c.architecture, Architecture::Mistral);
        assert_eq!(c.max_context(), 4096);
        assert!(!c.tie_word_embeddings && !c.qkv_bias);
        let v02 = text.replace("4096}", "null}");
        assert_eq!(ModelConfig::from_json(&v02).unwrap().max_context(), 32768);
    }

    #[test]
    fn qwen2_defaults_to_bias_and_ignores_unused_window() {
        let text = r#"{"architectures":["Qwen2ForCausalLM"],"hidden_size":896,
          "intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,
          "num_key_value_heads":2,"vocab_size":151936,"rope_theta":1000000.0,
          "max_position_embeddings":32768,"sliding_window":32768,"use_sliding_window":false,
          "tie_word_embeddings":true}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert!(c.qkv_bias && c.tie_word_embeddings);
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.sliding_window, None);
    }

    #[test]
    fn rejects_unknown_architecture() {
        let text = LLAMA3_8B.replace("LlamaForCausalLM", "GPT2LMHeadModel");
        let err = ModelConfig::from_json(&text).unwrap_err();
        assert!(err.to_string().contains("GPT2LMHeadModel"), "{err}");
    }

    #[test]
    fn rejects_bad_gqa() {
        let text = LLAMA3_8B.replace("\"num_key_value_heads\":8", "\"num_key_value_heads\":5");
        assert!(ModelConfig::from_json(&text).is_err());
    }
}
