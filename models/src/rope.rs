//! Rotary tables: cos/sin for every position up to the model's context, with the checkpoint's
//! frequency scaling (Llama 3.1's "llama3", "linear", Phi-3's LongRoPE) folded into the inverse
//! frequencies. Computed in f32 the way Hugging Face transformers does, so logits match it.
//!
//! LongRoPE has two sets of factors, for contexts within the pretrained length and beyond it.
//! transformers switches between them by the length of the sequence in the current forward
//! pass, which a KV cache cannot follow (keys written under one set would be read under the
//! other) and which would make a sequence's output depend on its neighbours. Here the choice is
//! the model's: a checkpoint whose `max_position_embeddings` exceeds its
//! `original_max_position_embeddings` (Phi-3-mini-128k, Phi-3.5, Phi-4-mini) uses the long
//! factors at every position, as llama.cpp does for a context past the pretrained one; one that
//! does not uses the short factors. The cos/sin scale (`attention_factor`) applies to both.

use crate::Result;
use crate::config::ModelConfig;
use candle_core::{Device, Tensor};

/// One step's rotary rows (cos, sin) per token: of the global rope, and of the local one
/// where an architecture has two (Gemma 3's sliding layers).
pub struct RopeRows {
    pub global: (Tensor, Tensor),
    pub local: Option<(Tensor, Tensor)>,
}

pub struct RotaryTables {
    /// `[max_positions, head_dim / 2]`, f32.
    pub cos: Tensor,
    pub sin: Tensor,
}

/// Inverse frequencies of the rotary embedding after the config's scaling.
pub fn inverse_frequencies(cfg: &ModelConfig) -> Vec<f32> {
    let inv = scaled_frequencies(cfg);
    match &cfg.rope_freq_factors {
        Some(factors) => inv.iter().zip(factors).map(|(f, d)| f / d).collect(),
        None => inv,
    }
}

/// Whether a LongRoPE checkpoint uses its long factors (see the module doc).
fn uses_long_factors(cfg: &ModelConfig) -> bool {
    cfg.original_max_position_embeddings
        .is_some_and(|orig| cfg.max_position_embeddings > orig)
}

/// The multiplier of cos and sin: LongRoPE's `attention_factor`, else
/// `sqrt(1 + ln(s) / ln(orig))` for a context `s` times the pretrained one (transformers'
/// default), 1 for every other scaling.
pub fn attention_factor(cfg: &ModelConfig) -> f32 {
    let (Some(scaling), Some(orig)) = (&cfg.rope_scaling, cfg.original_max_position_embeddings)
    else {
        return 1.0;
    };
    if let Some(f) = scaling.attention_factor {
        return f as f32;
    }
    let factor = cfg.max_position_embeddings as f64 / orig as f64;
    if factor <= 1.0 {
        return 1.0;
    }
    (1.0 + factor.ln() / (orig as f64).ln()).sqrt() as f32
}

fn scaled_frequencies(cfg: &ModelConfig) -> Vec<f32> {
    let dim = cfg.rotary_dim;
    let base = cfg.rope_theta as f32;
    let inv: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
        .collect();
    let Some(scaling) = &cfg.rope_scaling else {
        return inv;
    };
    let factor = scaling.factor.unwrap_or(1.0) as f32;
    match scaling.rope_type.as_str() {
        "linear" => inv.iter().map(|f| f / factor).collect(),
        "llama3" => {
            let low = scaling.low_freq_factor.unwrap_or(1.0) as f32;
            let high = scaling.high_freq_factor.unwrap_or(4.0) as f32;
            let old_ctx = scaling.original_max_position_embeddings.unwrap_or(8192) as f32;
            let low_wavelen = old_ctx / low;
            let high_wavelen = old_ctx / high;
            inv.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_ctx / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
        "longrope" | "su" => {
            let factors = match uses_long_factors(cfg) {
                true => &scaling.long_factor,
                false => &scaling.short_factor,
            };
            // Lengths were checked when the config was read.
            match factors {
                Some(ext) => inv.iter().zip(ext).map(|(f, e)| f / *e as f32).collect(),
                None => inv,
            }
        }
        _ => inv,
    }
}

/// Most values one table may hold: a million positions of a 128-wide head (256 MiB of f32).
/// The tables cover every position the config allows, up front, and a context length is a
/// number anyone can write (a GGUF's `context_length` is four bytes): one past every published
/// model's is refused here, not allocated (a GGUF claiming 0xFFFFFFFF positions made the
/// `fuzz/` gguf target allocate 2 × 32 GB).
const MAX_TABLE_VALUES: usize = 1 << 26;

impl RotaryTables {
    pub fn new(cfg: &ModelConfig, max_positions: usize, device: &Device) -> Result<Self> {
        let inv = inverse_frequencies(cfg);
        let scale = attention_factor(cfg);
        let half = inv.len();
        let values = max_positions
            .checked_mul(half)
            .filter(|&n| n <= MAX_TABLE_VALUES)
            .ok_or_else(|| {
                crate::ModelError::InvalidInput(format!(
                    "a context of {max_positions} positions with head size {} needs rotary tables over the limit of {MAX_TABLE_VALUES} values",
                    cfg.head_dim
                ))
            })?;
        let mut cos = Vec::with_capacity(values);
        let mut sin = Vec::with_capacity(values);
        for p in 0..max_positions {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos() * scale);
                sin.push(angle.sin() * scale);
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_positions, half), device)?,
            sin: Tensor::from_vec(sin, (max_positions, half), device)?,
        })
    }

    /// Per-token rows for the given positions (`[num_tokens]`, u32).
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.index_select(positions, 0)?,
            self.sin.index_select(positions, 0)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_positions: usize) -> ModelConfig {
        ModelConfig::from_json(&format!(
            r#"{{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":176,
            "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,
            "vocab_size":32,"rms_norm_eps":1e-5,"max_position_embeddings":{max_positions}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn tables_cover_every_position() {
        let t = RotaryTables::new(&config(64), 64, &Device::Cpu).unwrap();
        assert_eq!(t.cos.dims(), [64, 8]);
        assert_eq!(t.sin.dims(), [64, 8]);
    }

    /// transformers' default LongRoPE scale for Phi-3-mini-128k (32 × its 4k context), and the
    /// factor set each context takes.
    #[test]
    fn longrope_scale_and_factor_choice() {
        let text = |max: usize| {
            format!(
                r#"{{"architectures":["Phi3ForCausalLM"],"hidden_size":64,"intermediate_size":176,
                "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,
                "vocab_size":32,"max_position_embeddings":{max},
                "original_max_position_embeddings":4096,"rope_scaling":{{"type":"longrope",
                "short_factor":[1,1,1,1,1,1,1,1],"long_factor":[2,2,2,2,2,2,2,2]}}}}"#
            )
        };
        let long = ModelConfig::from_json(&text(131072)).unwrap();
        let f = attention_factor(&long);
        assert!((f - 1.190_238).abs() < 1e-5, "{f}");
        let short = ModelConfig::from_json(&text(4096)).unwrap();
        assert_eq!(attention_factor(&short), 1.0);
        let (l, s) = (inverse_frequencies(&long), inverse_frequencies(&short));
        assert!(l.iter().zip(&s).all(|(l, s)| (l * 2.0 - s).abs() < 1e-9));
    }

    /// A GGUF's `context_length` of 0xFFFFFFFF made the loader allocate 2 × 32 GB of tables
    /// (the gguf fuzz target). A million positions still load (Qwen2.5-1M's context).
    #[test]
    fn a_context_no_model_has_is_an_error_not_an_allocation() {
        let e = RotaryTables::new(&config(1 << 32), 1 << 32, &Device::Cpu)
            .err()
            .expect("4G positions refused");
        assert!(e.to_string().contains("4294967296 positions"), "{e}");
        assert!(RotaryTables::new(&config(usize::MAX), usize::MAX, &Device::Cpu).is_err());
        assert!(RotaryTables::new(&config(1_010_000), 1_010_000, &Device::Cpu).is_ok());
    }
}
