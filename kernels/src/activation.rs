//! SiLU(gate) · up over the fused gate_up projection's output, so the MLP needs one GEMM for
//! gate and up and one pass over its result.

use crate::elem::{Elem, contiguous, unsupported};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

struct SiluMul;

/// `[tokens, 2 * inter]` (gate then up) → `[tokens, inter]`.
pub fn silu_mul(gate_up: &Tensor) -> Result<Tensor> {
    gate_up.contiguous()?.apply_op1_no_bwd(&SiluMul)
}

fn silu_mul_rows<T: Elem>(x: &[T], dims: &[usize]) -> Result<(Vec<T>, Shape)> {
    let (rows, width) = match dims {
        &[r, w] if w % 2 == 0 => (r, w),
        _ => candle_core::bail!("silu_mul: input must be [tokens, 2 * inter], got {dims:?}"),
    };
    let inter = width / 2;
    let mut out = Vec::with_capacity(rows * inter);
    for row in x.chunks_exact(width) {
        let (gate, up) = row.split_at(inter);
        out.extend(gate.iter().zip(up).map(|(g, u)| {
            let g = g.to_f32();
            T::from_f32(g / (1.0 + (-g).exp()) * u.to_f32())
        }));
    }
    Ok((out, Shape::from((rows, inter))))
}

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        Ok(match x {
            CpuStorage::F32(x) => {
                let (o, s) = silu_mul_rows(contiguous(x, l, op)?, l.dims())?;
                (CpuStorage::F32(o), s)
            }
            CpuStorage::BF16(x) => {
                let (o, s) = silu_mul_rows(contiguous(x, l, op)?, l.dims())?;
                (CpuStorage::BF16(o), s)
            }
            CpuStorage::F16(x) => {
                let (o, s) = silu_mul_rows(contiguous(x, l, op)?, l.dims())?;
                (CpuStorage::F16(o), s)
            }
            other => return Err(unsupported(op, other)),
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::ops::silu_mul(x, l)
    }
}
