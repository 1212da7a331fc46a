//! Rotary tables: cos/sin for every position up to the model's context, with the checkpoint's
//! frequency scaling (Llama 3.1's "llama3" or "linear") folded into the inverse frequencies.
//! Computed in f32 the way Hugging Face transformers does, so logits match it.

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

fn scaled_frequencies(cfg: &ModelConfig) -> Vec<f32> {
    let dim = cfg.head_dim;
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
        _ => inv,
    }
}

impl RotaryTables {
    pub fn new(cfg: &ModelConfig, max_positions: usize, device: &Device) -> Result<Self> {
        let inv = inverse_frequencies(cfg);
        let half = inv.len();
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
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
