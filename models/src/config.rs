//! `config.json` of a Hugging Face checkpoint, reduced to what the Llama family needs.

use crate::{ModelError, Result};
use serde::Deserialize;
use std::path::Path;

/// Checkpoint families served by [`crate::CausalLm`]. The Llama family shares one decoder
/// layer ([`crate::llama`]); its members differ in qkv bias, per-head q/k norm (Qwen3), tied
/// embeddings and rope defaults, all of which the config or the family states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma2,
    Gemma3,
    /// Phi-3, 3.5 and 4: the Llama layer with q/k/v and gate/up fused in the checkpoint,
    /// LongRoPE scaling and (Phi-4-mini) a partial rotary.
    Phi3,
    /// Mixtral: Mistral's attention, every layer's MLP a sparse mixture of experts.
    Mixtral,
    /// Qwen2-MoE (Qwen1.5-MoE, Qwen2-57B-A14B): Qwen2's attention, experts plus a gated
    /// shared expert.
    Qwen2Moe,
    /// Qwen3-MoE (30B-A3B, 235B-A22B): Qwen3's attention, experts.
    Qwen3Moe,
}

impl Architecture {
    /// Every architecture served, by its Hugging Face class name (for `/v1/models` and docs).
    pub const ALL: [Architecture; 10] = [
        Architecture::Llama,
        Architecture::Mistral,
        Architecture::Qwen2,
        Architecture::Qwen3,
        Architecture::Gemma2,
        Architecture::Gemma3,
        Architecture::Phi3,
        Architecture::Mixtral,
        Architecture::Qwen2Moe,
        Architecture::Qwen3Moe,
    ];

    /// The Hugging Face `architectures` entry of this family.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Gemma2 => "Gemma2ForCausalLM",
            Architecture::Gemma3 => "Gemma3ForCausalLM",
            Architecture::Phi3 => "Phi3ForCausalLM",
            Architecture::Mixtral => "MixtralForCausalLM",
            Architecture::Qwen2Moe => "Qwen2MoeForCausalLM",
            Architecture::Qwen3Moe => "Qwen3MoeForCausalLM",
        }
    }

    /// The `model_type` of config.json (GGUF's `general.architecture` is matched in
    /// [`crate::gguf::arch::architecture`]; for Gemma 3 it is `gemma3`, not `gemma3_text`).
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma2 => "gemma2",
            Architecture::Gemma3 => "gemma3_text",
            Architecture::Phi3 => "phi3",
            Architecture::Mixtral => "mixtral",
            Architecture::Qwen2Moe => "qwen2_moe",
            Architecture::Qwen3Moe => "qwen3_moe",
        }
    }

    /// Gemma 2/3: the [`crate::gemma`] decoder layer instead of [`crate::llama`]'s.
    pub fn is_gemma(self) -> bool {
        matches!(self, Architecture::Gemma2 | Architecture::Gemma3)
    }

    /// Per-head q/k RMSNorm before rotary.
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Architecture::Qwen3 | Architecture::Qwen3Moe)
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
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
    /// LongRoPE (`longrope`, Phi-3's older `su`): per-frequency divisors for contexts up to
    /// the pretrained length (`short_factor`) and beyond it (`long_factor`).
    #[serde(default)]
    pub short_factor: Option<Vec<f64>>,
    #[serde(default)]
    pub long_factor: Option<Vec<f64>>,
    /// LongRoPE's cos/sin multiplier; derived from the context ratio when absent.
    #[serde(default)]
    pub attention_factor: Option<f64>,
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
    /// The pretrained context of a LongRoPE model (Phi-3 writes it beside `rope_scaling`).
    #[serde(default)]
    original_max_position_embeddings: Option<usize>,
    /// The fraction of each head that is rotated (Phi-4-mini: 0.75); the rest passes as is.
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
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
    /// Gemma's name for `hidden_act`.
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default)]
    query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    final_logit_softcapping: Option<f64>,
    /// Per layer `sliding_attention` or `full_attention` (transformers ≥ 4.53 writes it).
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    /// Gemma 3's older spelling of the interleave: every `n`-th layer is global.
    #[serde(default)]
    sliding_window_pattern: Option<usize>,
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    /// Mixtral's expert count; Qwen-MoE's is `num_experts`.
    #[serde(default)]
    num_local_experts: Option<usize>,
    #[serde(default)]
    num_experts: Option<usize>,
    #[serde(default)]
    num_experts_per_tok: Option<usize>,
    #[serde(default)]
    moe_intermediate_size: Option<usize>,
    #[serde(default)]
    shared_expert_intermediate_size: Option<usize>,
    #[serde(default)]
    norm_topk_prob: Option<bool>,
    #[serde(default)]
    decoder_sparse_step: Option<usize>,
    #[serde(default)]
    mlp_only_layers: Option<Vec<usize>>,
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
    /// LongRoPE: the pretrained context; the long factors apply when
    /// `max_position_embeddings` exceeds it (see [`crate::rope`]).
    pub original_max_position_embeddings: Option<usize>,
    /// Leading dimensions of each head that rotary rotates (`head_dim` unless the config
    /// has a `partial_rotary_factor`).
    pub rotary_dim: usize,
    /// Phi-3: q/k/v are one `qkv_proj` and gate/up one `gate_up_proj` in the checkpoint.
    pub fused_checkpoint_projections: bool,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (Qwen2).
    pub qkv_bias: bool,
    /// Mistral v0.1's sliding window; the engine caps the context to it, since a full
    /// attention over at most `window` tokens is exactly the sliding-window result.
    pub sliding_window: Option<usize>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Gemma 2/3's options; `None` for every other family.
    pub gemma: Option<GemmaOptions>,
    /// Mixture-of-experts options (Mixtral, Qwen-MoE); `None` for dense families.
    pub moe: Option<MoeOptions>,
}

/// A sparse mixture-of-experts MLP: the router picks `top_k` of `num_experts` SwiGLU experts
/// per token.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeOptions {
    pub num_experts: usize,
    pub top_k: usize,
    /// Each expert's intermediate size.
    pub expert_intermediate: usize,
    /// The top-k weights are rescaled to sum to one (Mixtral; Qwen's `norm_topk_prob`).
    pub renormalize: bool,
    /// Qwen2-MoE's shared expert (its intermediate size), added to every token's output
    /// through a sigmoid gate.
    pub shared_expert_intermediate: Option<usize>,
    /// Per layer: experts (`true`) or the dense MLP of `intermediate_size` (Qwen's
    /// `mlp_only_layers` and `decoder_sparse_step`).
    pub sparse_layers: Vec<bool>,
}

impl MoeOptions {
    fn from_raw(architecture: Architecture, raw: &RawConfig) -> std::result::Result<Self, String> {
        let num_experts = match architecture {
            Architecture::Mixtral => raw.num_local_experts,
            _ => raw.num_experts,
        }
        .ok_or("the expert count (num_local_experts / num_experts) is missing")?;
        let top_k = raw.num_experts_per_tok.unwrap_or(2);
        if num_experts == 0 || top_k == 0 || top_k > num_experts {
            return Err(format!(
                "num_experts_per_tok {top_k} must be between 1 and the {num_experts} experts"
            ));
        }
        let (expert_intermediate, renormalize, shared) = match architecture {
            Architecture::Mixtral => (raw.intermediate_size, true, None),
            _ => (
                raw.moe_intermediate_size
                    .ok_or("moe_intermediate_size is missing")?,
                raw.norm_topk_prob.unwrap_or(false),
                match architecture {
                    Architecture::Qwen2Moe => {
                        raw.shared_expert_intermediate_size.filter(|&s| s > 0)
                    }
                    _ => None,
                },
            ),
        };
        let step = raw.decoder_sparse_step.unwrap_or(1).max(1);
        let dense = raw.mlp_only_layers.clone().unwrap_or_default();
        let sparse_layers = (0..raw.num_hidden_layers)
            .map(|l| !dense.contains(&l) && (l + 1) % step == 0)
            .collect();
        Ok(Self {
            num_experts,
            top_k,
            expert_intermediate,
            renormalize,
            shared_expert_intermediate: shared,
            sparse_layers,
        })
    }
}

/// What Gemma 2 and 3 add to the Llama family's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaOptions {
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2`, not `head_dim^-1/2`.
    pub query_pre_attn_scalar: f64,
    /// Gemma 2: scores become `cap * tanh(score / cap)`.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2: logits become `cap * tanh(logit / cap)`.
    pub final_logit_softcapping: Option<f64>,
    /// Per layer: `Some(window)` for a sliding-window layer, `None` for a global one. Exact
    /// attention over the window; the engine keeps every block (no context cap).
    pub layer_windows: Vec<Option<usize>>,
    /// Gemma 3: the rope base of the sliding layers (no scaling there); the global layers
    /// use `rope_theta` and `rope_scaling`. `None`: one rope for all layers (Gemma 2).
    pub rope_local_theta: Option<f64>,
}

/// Sliding (`true`) or global per layer from Gemma's `layer_types`, else from its pattern:
/// Gemma 2 alternates starting with a sliding layer; Gemma 3 has `pattern - 1` sliding
/// layers, then a global one.
pub(crate) fn gemma_sliding_layers(
    architecture: Architecture,
    num_layers: usize,
    layer_types: Option<&[String]>,
    pattern: Option<usize>,
) -> std::result::Result<Vec<bool>, String> {
    if let Some(types) = layer_types {
        if types.len() != num_layers {
            return Err(format!(
                "layer_types has {} entries for {num_layers} layers",
                types.len()
            ));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(true),
                "full_attention" => Ok(false),
                other => Err(format!("layer type `{other}` is not supported")),
            })
            .collect();
    }
    let pattern = match architecture {
        Architecture::Gemma2 => 2,
        _ => pattern.unwrap_or(6),
    };
    if pattern == 0 {
        return Err("sliding_window_pattern must be at least 1".into());
    }
    Ok((0..num_layers).map(|i| (i + 1) % pattern != 0).collect())
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
        // Gemma's GeGLU uses the tanh approximation of GELU; the Llama family SiLU.
        let want_act = if architecture.is_gemma() {
            "gelu_pytorch_tanh"
        } else {
            "silu"
        };
        if let Some(act) = raw
            .hidden_activation
            .as_deref()
            .or(raw.hidden_act.as_deref())
            && act != want_act
        {
            return Err(invalid(format!(
                "hidden activation `{act}` is not supported for {} (only {want_act})",
                architecture.hf_class()
            )));
        }
        let rotary_dim = match raw.partial_rotary_factor {
            None => head_dim,
            Some(f) => {
                let dim = (head_dim as f64 * f) as usize;
                if !(f > 0.0 && f <= 1.0) || dim == 0 || !dim.is_multiple_of(2) {
                    return Err(invalid(format!(
                        "partial_rotary_factor {f} of head_dim {head_dim} is not an even number of dimensions"
                    )));
                }
                dim
            }
        };
        let original_max_position_embeddings = match &raw.rope_scaling {
            Some(s) if matches!(s.rope_type.as_str(), "longrope" | "su") => {
                // Phi3Config's default when the file has none.
                let orig = raw
                    .original_max_position_embeddings
                    .or(s.original_max_position_embeddings)
                    .unwrap_or(4096);
                for (name, f) in [
                    ("short_factor", &s.short_factor),
                    ("long_factor", &s.long_factor),
                ] {
                    match f {
                        Some(v) if v.len() == rotary_dim / 2 => {}
                        Some(v) => {
                            return Err(invalid(format!(
                                "rope_scaling.{name} has {} entries, expected {} (rotary dimensions / 2)",
                                v.len(),
                                rotary_dim / 2
                            )));
                        }
                        None => return Err(invalid(format!("rope_scaling.{name} is missing"))),
                    }
                }
                if orig == 0 {
                    return Err(invalid(
                        "original_max_position_embeddings must be positive".into(),
                    ));
                }
                Some(orig)
            }
            Some(s) if !matches!(s.rope_type.as_str(), "llama3" | "linear" | "default") => {
                return Err(invalid(format!(
                    "rope_scaling type `{}` is not supported (llama3, linear, longrope)",
                    s.rope_type
                )));
            }
            _ => None,
        };
        let gemma = if architecture.is_gemma() {
            let sliding = gemma_sliding_layers(
                architecture,
                raw.num_hidden_layers,
                raw.layer_types.as_deref(),
                raw.sliding_window_pattern,
            )
            .map_err(invalid)?;
            let window = raw.sliding_window.unwrap_or(4096);
            Some(GemmaOptions {
                query_pre_attn_scalar: raw.query_pre_attn_scalar.unwrap_or(head_dim as f64),
                attn_logit_softcapping: raw.attn_logit_softcapping,
                final_logit_softcapping: raw.final_logit_softcapping,
                layer_windows: sliding.iter().map(|&s| s.then_some(window)).collect(),
                rope_local_theta: match architecture {
                    Architecture::Gemma3 => Some(raw.rope_local_base_freq.unwrap_or(10_000.0)),
                    _ => None,
                },
            })
        } else {
            None
        };
        let moe = match architecture {
            Architecture::Mixtral | Architecture::Qwen2Moe | Architecture::Qwen3Moe => {
                Some(MoeOptions::from_raw(architecture, &raw).map_err(|e| invalid(e.to_string()))?)
            }
            _ => None,
        };
        let sliding_window = match architecture {
            Architecture::Qwen2
            | Architecture::Qwen3
            | Architecture::Qwen2Moe
            | Architecture::Qwen3Moe
                if raw.use_sliding_window != Some(true) =>
            {
                None
            }
            // Gemma's windows are per layer and exact (`gemma`): no context cap.
            Architecture::Gemma2 | Architecture::Gemma3 => None,
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
            original_max_position_embeddings,
            rotary_dim,
            fused_checkpoint_projections: architecture == Architecture::Phi3,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(matches!(
                architecture,
                Architecture::Qwen2 | Architecture::Gemma2 | Architecture::Gemma3
            )),
            qkv_bias: raw.attention_bias.unwrap_or(matches!(
                architecture,
                Architecture::Qwen2 | Architecture::Qwen2Moe
            )),
            sliding_window,
            bos_token_id: token_ids_from_json(raw.bos_token_id.as_ref())
                .first()
                .copied(),
            eos_token_ids: token_ids_from_json(raw.eos_token_id.as_ref()),
            gemma,
            moe,
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
        let attention = qkv + o + 2 * h;
        let mlps: usize = (0..self.num_layers)
            .map(|l| match &self.moe {
                Some(m) if m.sparse_layers[l] => {
                    let shared = m.shared_expert_intermediate.map_or(0, |s| 3 * h * s + h);
                    m.num_experts * (3 * h * m.expert_intermediate + h) + shared
                }
                _ => 3 * h * i,
            })
            .sum();
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        attention * self.num_layers + mlps + embed + head + h
    }

    /// KV-cache bytes one token takes across all layers.
    pub fn kv_bytes_per_token(&self, dtype_size: usize) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_size
    }
}

fn detect_architecture(raw: &RawConfig) -> Result<Architecture> {
    let names: Vec<&str> = raw.architectures.iter().map(String::as_str).collect();
    let by_name = names
        .iter()
        .find_map(|a| Architecture::ALL.into_iter().find(|x| x.hf_class() == *a));
    let by_type = raw
        .model_type
        .as_deref()
        .and_then(|t| Architecture::ALL.into_iter().find(|x| x.model_type() == t));
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
    fn qwen3_takes_head_dim_from_the_config_and_has_no_bias() {
        let text = r#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":1024,
          "intermediate_size":3072,"num_hidden_layers":28,"num_attention_heads":16,
          "num_key_value_heads":8,"head_dim":128,"vocab_size":151936,"rope_theta":1000000.0,
          "max_position_embeddings":40960,"sliding_window":null,"use_sliding_window":false,
          "attention_bias":false,"tie_word_embeddings":true}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert_eq!(c.architecture, Architecture::Qwen3);
        assert_eq!(c.head_dim, 128);
        assert!(!c.qkv_bias && c.tie_word_embeddings);
        assert_eq!(c.max_context(), 40960);
    }

    #[test]
    fn gemma3_interleaves_five_sliding_layers_with_one_global() {
        let text = r#"{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text",
          "hidden_size":640,"intermediate_size":2048,"num_hidden_layers":18,
          "num_attention_heads":4,"num_key_value_heads":1,"head_dim":256,"vocab_size":262144,
          "rope_theta":1000000.0,"rope_local_base_freq":10000.0,"sliding_window":512,
          "query_pre_attn_scalar":256,"hidden_activation":"gelu_pytorch_tanh",
          "max_position_embeddings":32768}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        assert!(c.tie_word_embeddings && c.sliding_window.is_none());
        assert_eq!(c.max_context(), 32768);
        let g = c.gemma.unwrap();
        let globals: Vec<usize> = (0..18).filter(|&i| g.layer_windows[i].is_none()).collect();
        assert_eq!(globals, vec![5, 11, 17]);
        assert_eq!(g.layer_windows[0], Some(512));
        assert_eq!(g.rope_local_theta, Some(10_000.0));
        let silu = text.replace("gelu_pytorch_tanh", "silu");
        assert!(ModelConfig::from_json(&silu).is_err());
    }

    /// Phi-3-mini-128k-instruct's config (its 48 + 48 LongRoPE factors made up here).
    fn phi3_128k(factors: usize, partial: &str) -> String {
        let f = vec!["1.5"; factors].join(",");
        format!(
            r#"{{"architectures":["Phi3ForCausalLM"],"model_type":"phi3","hidden_size":3072,
            "intermediate_size":8192,"num_hidden_layers":32,"num_attention_heads":32,
            "num_key_value_heads":32,"vocab_size":32064,"rms_norm_eps":1e-5,
            "rope_theta":10000.0,"max_position_embeddings":131072,
            "original_max_position_embeddings":4096,"sliding_window":262144,{partial}
            "rope_scaling":{{"type":"longrope","short_factor":[{f}],"long_factor":[{f}]}},
            "tie_word_embeddings":false,"hidden_act":"silu"}}"#
        )
    }

    #[test]
    fn phi3_reads_longrope_and_the_partial_rotary() {
        let c = ModelConfig::from_json(&phi3_128k(48, "")).unwrap();
        assert_eq!(c.architecture, Architecture::Phi3);
        assert_eq!((c.head_dim, c.rotary_dim), (96, 96));
        assert_eq!(c.original_max_position_embeddings, Some(4096));
        assert!(c.fused_checkpoint_projections && !c.tie_word_embeddings && !c.qkv_bias);
        assert_eq!(c.max_context(), 131072);
        // 0.75 of 96: 72 rotated dimensions, 36 factors (Phi-4-mini's shape).
        let partial = phi3_128k(36, r#""partial_rotary_factor":0.75,"#);
        assert_eq!(ModelConfig::from_json(&partial).unwrap().rotary_dim, 72);
        let e = ModelConfig::from_json(&phi3_128k(40, "")).unwrap_err();
        assert!(
            e.to_string()
                .contains("short_factor has 40 entries, expected 48"),
            "{e}"
        );
        let odd = phi3_128k(48, r#""partial_rotary_factor":0.3,"#);
        assert!(ModelConfig::from_json(&odd).is_err());
    }

    #[test]
    fn phi3_4k_without_scaling_is_capped_to_its_window() {
        let text = r#"{"architectures":["Phi3ForCausalLM"],"hidden_size":3072,
          "intermediate_size":8192,"num_hidden_layers":32,"num_attention_heads":32,
          "num_key_value_heads":32,"vocab_size":32064,"max_position_embeddings":4096,
          "original_max_position_embeddings":4096,"sliding_window":2047,"rope_scaling":null}"#;
        let c = ModelConfig::from_json(text).unwrap();
        assert_eq!(c.original_max_position_embeddings, None);
        assert_eq!(c.max_context(), 2047);
    }

    #[test]
    fn mixture_of_experts_configs_and_their_sizes() {
        let mixtral = r#"{"architectures":["MixtralForCausalLM"],"hidden_size":4096,
          "intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,
          "num_key_value_heads":8,"vocab_size":32000,"rms_norm_eps":1e-5,"rope_theta":1e6,
          "max_position_embeddings":32768,"num_local_experts":8,"num_experts_per_tok":2,
          "sliding_window":null,"tie_word_embeddings":false}"#;
        let c = ModelConfig::from_json(mixtral).unwrap();
        let m = c.moe.as_ref().unwrap();
        assert_eq!(
            (m.num_experts, m.top_k, m.expert_intermediate),
            (8, 2, 14336)
        );
        assert!(m.renormalize && m.shared_expert_intermediate.is_none());
        assert!(m.sparse_layers.iter().all(|&s| s));
        // Mixtral-8x7B has 46.7 B parameters.
        let p = c.num_parameters() as f64 / 1e9;
        assert!((p - 46.7).abs() < 0.05, "{p}");

        let qwen3 = r#"{"architectures":["Qwen3MoeForCausalLM"],"hidden_size":2048,
          "intermediate_size":6144,"num_hidden_layers":48,"num_attention_heads":32,
          "num_key_value_heads":4,"head_dim":128,"vocab_size":151936,"rope_theta":1e6,
          "max_position_embeddings":40960,"num_experts":128,"num_experts_per_tok":8,
          "moe_intermediate_size":768,"norm_topk_prob":true,"decoder_sparse_step":1,
          "mlp_only_layers":[],"use_sliding_window":false,"sliding_window":null,
          "tie_word_embeddings":false,"attention_bias":false}"#;
        let c = ModelConfig::from_json(qwen3).unwrap();
        assert!(c.architecture.has_qk_norm() && !c.qkv_bias);
        assert!(c.moe.as_ref().unwrap().renormalize);
        // Qwen3-30B-A3B: 30.5 B.
        let p = c.num_parameters() as f64 / 1e9;
        assert!((p - 30.5).abs() < 0.1, "{p}");

        let qwen2 = r#"{"architectures":["Qwen2MoeForCausalLM"],"hidden_size":2048,
          "intermediate_size":5632,"num_hidden_layers":4,"num_attention_heads":16,
          "num_key_value_heads":16,"vocab_size":151936,"num_experts":60,
          "num_experts_per_tok":4,"moe_intermediate_size":1408,
          "shared_expert_intermediate_size":5632,"decoder_sparse_step":2,
          "mlp_only_layers":[3]}"#;
        let c = ModelConfig::from_json(qwen2).unwrap();
        let m = c.moe.as_ref().unwrap();
        assert!(c.qkv_bias && !m.renormalize);
        assert_eq!(m.shared_expert_intermediate, Some(5632));
        assert_eq!(m.sparse_layers, vec![false, true, false, false]);

        let too_many = mixtral.replace("\"num_experts_per_tok\":2", "\"num_experts_per_tok\":9");
        assert!(ModelConfig::from_json(&too_many).is_err());
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
