//! RMSNorm, and the residual-add + RMSNorm pair every decoder layer runs twice (one fused
//! kernel on the GPU: one read of x and residual, one write of each output).

use crate::elem::{Elem, contiguous, unsupported};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

struct RmsNorm {
    eps: f32,
}

/// x, residual, weight → `[2, ...x's shape]`: the normed rows, then `x + residual`. One kernel on the GPU; the
/// CPU side computes exactly what the unfused pair does (sum rounded to the dtype, then [`rms_norm`]).
struct FusedAddRmsNorm {
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
    if x.device().is_cuda() {
        if x.shape() != residual.shape() {
            candle_core::bail!(
                "fused_add_rms_norm: x {:?} vs residual {:?}",
                x.dims(),
                residual.dims()
            );
        }
        let both = x.contiguous()?.apply_op3_no_bwd(
            &residual.contiguous()?,
            &weight.contiguous()?,
            &FusedAddRmsNorm { eps },
        )?;
        return Ok((both.get(0)?, both.get(1)?));
    }
    let sum = (x + residual)?;
    let normed = rms_norm(&sum, weight, eps)?;
    Ok((normed, sum))
}

/// The fused op on any device (the CPU path of [`fused_add_rms_norm`] keeps the unfused pair; this is how the
/// fused op's own CPU side is checked against it).
pub fn fused_add_rms_norm_op(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let both = x.contiguous()?.apply_op3_no_bwd(
        &residual.contiguous()?,
        &weight.contiguous()?,
        &FusedAddRmsNorm { eps },
    )?;
    Ok((both.get(0)?, both.get(1)?))
}

fn add_norm_rows<T: Elem>(x: &[T], r: &[T], w: &[T], eps: f32) -> Result<Vec<T>> {
    if x.len() != r.len() {
        candle_core::bail!("fused_add_rms_norm: x and residual differ in length");
    }
    let sum: Vec<T> = x
        .iter()
        .zip(r)
        .map(|(a, b)| T::from_f32(a.to_f32() + b.to_f32()))
        .collect();
    let mut out = norm_rows(&sum, w, eps)?;
    out.extend_from_slice(&sum);
    Ok(out)
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_l: &Layout,
        w: &candle_core::CudaStorage,
        w_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::rms_norm(x, x_l, w, w_l, self.eps)
    }
}

impl CustomOp3 for FusedAddRmsNorm {
    fn name(&self) -> &'static str {
        "fused-add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        r: &CpuStorage,
        r_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        if x_l.dims() != r_l.dims() {
            candle_core::bail!("{op}: x {:?} vs residual {:?}", x_l.dims(), r_l.dims());
        }
        let out = match (x, r, w) {
            (CpuStorage::F32(x), CpuStorage::F32(r), CpuStorage::F32(w)) => {
                CpuStorage::F32(add_norm_rows(
                    contiguous(x, x_l, op)?,
                    contiguous(r, r_l, op)?,
                    contiguous(w, w_l, op)?,
                    self.eps,
                )?)
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(r), CpuStorage::BF16(w)) => {
                CpuStorage::BF16(add_norm_rows(
                    contiguous(x, x_l, op)?,
                    contiguous(r, r_l, op)?,
                    contiguous(w, w_l, op)?,
                    self.eps,
                )?)
            }
            (CpuStorage::F16(x), CpuStorage::F16(r), CpuStorage::F16(w)) => {
                CpuStorage::F16(add_norm_rows(
                    contiguous(x, x_l, op)?,
                    contiguous(r, r_l, op)?,
                    contiguous(w, w_l, op)?,
                    self.eps,
                )?)
            }
            (x, _, _) => return Err(unsupported(op, x)),
        };
        let mut dims = vec![2];
        dims.extend_from_slice(x_l.dims());
        Ok((out, Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        x_l: &Layout,
        r: &candle_core::CudaStorage,
        r_l: &Layout,
        w: &candle_core::CudaStorage,
        w_l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::fused_add_rms_norm(x, x_l, r, r_l, w, w_l, self.eps)
    }
}
