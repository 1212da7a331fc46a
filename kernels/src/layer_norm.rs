//! `LayerNorm(x + bias + residual)`, the close of each half of a post-norm encoder layer, in
//! one pass over rows in parallel on the caller's rayon pool: candle's element-wise ops run on
//! one process-wide pool shared with the chat engine (so an embedding batch's adds queued
//! behind, and slowed, chat steps), and each unfused op is another pass and allocation. The
//! reference composes candle ops; other devices and dtypes use it.

use crate::elem::{cpu_f32, f32s};
use crate::uninit::{assume_init, uninit};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `LayerNorm(x + bias + residual)` over the last dim: `x`, `residual` `[rows, h]`; `bias`
/// and the norm's `gamma`/`beta` `[h]`.
pub fn bias_residual_layer_norm(
    x: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    if cpu_f32(&[x, bias, residual, gamma, beta]) {
        let params = Tensor::stack(&[bias, gamma, beta], 0)?;
        x.contiguous()?.apply_op3_no_bwd(
            &residual.contiguous()?,
            &params,
            &BiasResidualNorm { eps },
        )
    } else {
        bias_residual_layer_norm_reference(x, bias, residual, gamma, beta, eps)
    }
}

pub fn bias_residual_layer_norm_reference(
    x: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let v = (x.broadcast_add(bias)? + residual)?;
    let mean = v.mean_keepdim(1)?;
    let c = v.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(1)?;
    c.broadcast_div(&(var + eps as f64)?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}

struct BiasResidualNorm {
    eps: f32,
}

impl CustomOp3 for BiasResidualNorm {
    fn name(&self) -> &'static str {
        "bias-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        r: &CpuStorage,
        lr: &Layout,
        p: &CpuStorage,
        lp: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, r, p) = (f32s(x, lx, op)?, f32s(r, lr, op)?, f32s(p, lp, op)?);
        let h = match lx.dims() {
            &[_, h] if p.len() == 3 * h && r.len() == x.len() => h,
            d => candle_core::bail!(
                "{op}: x {d:?}, residual {:?}, params {:?}",
                lr.dims(),
                lp.dims()
            ),
        };
        let (bias, rest) = p.split_at(h);
        let (gamma, beta) = rest.split_at(h);
        let mut out = uninit::<f32>(x.len());
        let eps = self.eps;
        let rows_per_task = (8192 / h).max(1);
        out.par_chunks_mut(rows_per_task * h)
            .zip(
                x.par_chunks(rows_per_task * h)
                    .zip(r.par_chunks(rows_per_task * h)),
            )
            .for_each_init(
                || vec![0f32; h],
                |sum_row, (o, (x, r))| {
                    for ((o, x), r) in o
                        .chunks_exact_mut(h)
                        .zip(x.chunks_exact(h))
                        .zip(r.chunks_exact(h))
                    {
                        for ((v, x), (r, b)) in sum_row.iter_mut().zip(x).zip(r.iter().zip(bias)) {
                            *v = x + b + r;
                        }
                        let mean = lane_sum(sum_row, |v| v) / h as f32;
                        let var = lane_sum(sum_row, |v| (v - mean) * (v - mean)) / h as f32;
                        let inv = 1.0 / (var + eps).sqrt();
                        for (((o, v), g), b) in o.iter_mut().zip(&*sum_row).zip(gamma).zip(beta) {
                            o.write((v - mean) * inv * g + b);
                        }
                    }
                },
            );
        // SAFETY: the chunks cover `out`, and every row of each is written.
        let out = unsafe { assume_init(out) };
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }
}

/// `Σ f(x)` in 16 running sums (a vector) added at the end: a single running f32 sum
/// cannot be reordered, so it would stay scalar.
#[inline]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in chunks.by_ref() {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elem::test_tensors::max_abs_diff as max_diff;
    use candle_core::Device;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn bias_residual_layer_norm_matches_the_reference() {
        let (rows, h) = (37, 50); // three 16-lane chunks and a tail
        let (x, r) = (randn(&[rows, h]), randn(&[rows, h]));
        let (bias, g, b) = (randn(&[h]), randn(&[h]), randn(&[h]));
        let got = bias_residual_layer_norm(&x, &bias, &r, &g, &b, 1e-12).unwrap();
        let want = bias_residual_layer_norm_reference(&x, &bias, &r, &g, &b, 1e-12).unwrap();
        assert!(max_diff(&got, &want) < 2e-5, "{}", max_diff(&got, &want));
    }
}
