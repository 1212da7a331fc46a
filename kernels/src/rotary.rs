//! Rotary position embedding, "neox" (rotate-half) form as Llama/Mistral/Qwen2 checkpoints in
//! Hugging Face format use it. The cos/sin rows are gathered per token by the caller, so one
//! batch can mix positions of many sequences; frequency scaling (llama3, linear) lives in the
//! tables, not here.

use crate::elem::{Elem, contiguous, unsupported};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

struct Rotary;

/// Rotates `x` (`[num_tokens, num_heads, head_size]`) with per-token `cos`/`sin`
/// (`[num_tokens, head_size / 2]`, same dtype as x or f32).
///
/// On CUDA, `x` may be a strided view (unit stride inside a head, e.g. q or k narrowed out of the fused qkv
/// projection): the kernel reads it in place, so no copy is made. The output is always contiguous.
pub fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = if x.device().is_cuda() && x.rank() == 3 && x.stride()[2] == 1 {
        x.clone()
    } else {
        x.contiguous()?
    };
    let cos = cos.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let sin = sin.to_dtype(candle_core::DType::F32)?.contiguous()?;
    x.apply_op3_no_bwd(&cos, &sin, &Rotary)
}

fn rotate<T: Elem>(x: &[T], dims: &[usize], cos: &[f32], sin: &[f32]) -> Result<Vec<T>> {
    let (tokens, heads, hs) = match dims {
        &[t, h, d] => (t, h, d),
        _ => candle_core::bail!("rotary: x must be [tokens, heads, head_size]"),
    };
    let half = hs / 2;
    if hs % 2 != 0 || cos.len() != tokens * half || sin.len() != tokens * half {
        candle_core::bail!("rotary: cos/sin must be [tokens, head_size/2]");
    }
    let mut out = vec![T::from_f32(0.0); x.len()];
    for t in 0..tokens {
        let (c, s) = (&cos[t * half..][..half], &sin[t * half..][..half]);
        for h in 0..heads {
            let base = (t * heads + h) * hs;
            for i in 0..half {
                let x1 = x[base + i].to_f32();
                let x2 = x[base + half + i].to_f32();
                out[base + i] = T::from_f32(x1 * c[i] - x2 * s[i]);
                out[base + half + i] = T::from_f32(x2 * c[i] + x1 * s[i]);
            }
        }
    }
    Ok(out)
}

impl CustomOp3 for Rotary {
    fn name(&self) -> &'static str {
        "rotary-neox"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        cos: &CpuStorage,
        cos_l: &Layout,
        sin: &CpuStorage,
        sin_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (cos, sin) = match (cos, sin) {
            (CpuStorage::F32(c), CpuStorage::F32(s)) => {
                (contiguous(c, cos_l, op)?, contiguous(s, sin_l, op)?)
            }
            _ => candle_core::bail!("{op}: cos/sin must be f32"),
        };
        let dims = x_l.dims();
        let out = match x {
            CpuStorage::F32(x) => CpuStorage::F32(rotate(contiguous(x, x_l, op)?, dims, cos, sin)?),
            CpuStorage::BF16(x) => {
                CpuStorage::BF16(rotate(contiguous(x, x_l, op)?, dims, cos, sin)?)
            }
            CpuStorage::F16(x) => CpuStorage::F16(rotate(contiguous(x, x_l, op)?, dims, cos, sin)?),
            other => return Err(unsupported(op, other)),
        };
        Ok((out, x_l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_l: &Layout,
        cos: &candle_core::CudaStorage,
        cos_l: &Layout,
        sin: &candle_core::CudaStorage,
        sin_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::rotary(x, x_l, cos, cos_l, sin, sin_l)
    }
}
