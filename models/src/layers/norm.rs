//! RMSNorm with its weight and epsilon, over the last dimension, through the fused kernels.

use crate::Result;
use crate::weights::WeightSource;
use candle_core::Tensor;
use indus_kernels::{fused_add_rms_norm, rms_norm};

/// `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn load(src: &WeightSource, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: src.get(name, &[size])?,
            eps: eps as f32,
        })
    }

    /// Gemma's RMSNorm, `norm(x) * (1 + w)`: Hugging Face checkpoints store `w`, so the one
    /// is added here (in f32, then cast to the model dtype). GGUF files already hold `1 + w`
    /// (llama.cpp's converter adds it) and load with [`RmsNorm::load`].
    pub(crate) fn load_plus_one(
        src: &WeightSource,
        name: &str,
        size: usize,
        eps: f64,
    ) -> Result<Self> {
        let w = src.get(name, &[size])?;
        let dtype = w.dtype();
        Ok(Self {
            weight: (w.to_dtype(candle_core::DType::F32)? + 1.0)?.to_dtype(dtype)?,
            eps: eps as f32,
        })
    }

    /// The checkpoint's kind of Gemma norm: `1 + w` for Hugging Face weights, as stored for
    /// GGUF.
    pub(crate) fn load_gemma(
        src: &WeightSource,
        name: &str,
        size: usize,
        eps: f64,
    ) -> Result<Self> {
        if src.is_gguf() {
            Self::load(src, name, size, eps)
        } else {
            Self::load_plus_one(src, name, size, eps)
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(rms_norm(x, &self.weight, self.eps)?)
    }

    /// `(norm(x + residual), x + residual)`: one fused kernel on the GPU.
    pub fn add_forward(&self, x: &Tensor, residual: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(fused_add_rms_norm(x, residual, &self.weight, self.eps)?)
    }

    /// Normalizes each head's vector of a `[tokens, heads, head_dim]` tensor (Qwen3's q/k
    /// norm): the rows are made contiguous and normed as `[tokens * heads, head_dim]`.
    pub fn forward_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (t, h, d) = x.dims3()?;
        let rows = x.contiguous()?.reshape((t * h, d))?;
        Ok(self.forward(&rows)?.reshape((t, h, d))?)
    }

    pub fn weight_bytes(&self) -> usize {
        crate::linear::tensor_bytes(&self.weight)
    }
}
