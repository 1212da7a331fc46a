//! RMSNorm, and the residual-add + RMSNorm pair every decoder layer runs twice (one fused
//! kernel on the GPU: one read of x and residual, one write of each output).

use crate::elem::{Elem, contiguous, unsupported};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

struct RmsNorm {
    eps: f32,
}

/// `x / sqrt(mean(x²) + eps) * weight` over the last dim, accumulated in f32.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    x.apply_op2_no_bwd(&weight, &RmsNorm { eps })
}

/// Returns `(rms_norm(x + residual), x + residual)`: the normed input of the next sub-layer
/// and the new residual stream.
pub fn fused_add_rms_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let sum = (x + residual)?;
    let normed = rms_norm(&sum, weight, eps)?;
    Ok((normed, sum))
}

fn norm_rows<T: Elem>(x: &[T], w: &[T], eps: f32) -> Result<Vec<T>> {
    let dim = w.len();
    if dim == 0 || !x.len().is_multiple_of(dim) {
        candle_core::bail!(
            "rms_norm: weight of {dim} does not divide input of {}",
            x.len()
        );
    }
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(dim) {
        let ms = row.iter().map(|v| v.to_f32() * v.to_f32()).sum::<f32>() / dim as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(v, g)| T::from_f32(v.to_f32() * inv * g.to_f32())),
        );
    }
    Ok(out)
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let out = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(norm_rows(
                contiguous(x, x_l, op)?,
                contiguous(w, w_l, op)?,
                self.eps,
            )?),
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => CpuStorage::BF16(norm_rows(
                contiguous(x, x_l, op)?,
                contiguous(w, w_l, op)?,
                self.eps,
            )?),
            (CpuStorage::F16(x), CpuStorage::F16(w)) => CpuStorage::F16(norm_rows(
                contiguous(x, x_l, op)?,
                contiguous(w, w_l, op)?,
                self.eps,
            )?),
            (x, _) => return Err(unsupported(op, x)),
        };
        Ok((out, x_l.shape().clone()))
    }
}
