//! Bias-add + exact (erf) GELU in one pass over an encoder's intermediate projection, as
//! BERT-family models compute it. candle's own path is a broadcast add and a scalar libm
//! `erff` per element — about 12 % of an all-MiniLM batch in a profile — so the CPU path
//! evaluates erf as a rational polynomial (no `exp`, no branches: it vectorises) over rows
//! in parallel on the caller's rayon pool. Other devices compose candle's ops.

use crate::elem::{cpu_f32, f32s};
use crate::uninit::{assume_init, uninit};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// erf(x) for f32, within 1e-6 of the true value: an odd/even rational minimax
/// approximation on [-4, 4] (erf is ±1 in f32 outside). Plain `*`/`+` so it vectorises
/// without FMA target features.
#[inline]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    let p = x * p;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

/// GELU(x + bias) with the exact (erf) form: `[rows, width]` and `[width]` → `[rows, width]`.
pub fn bias_gelu_erf(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if cpu_f32(&[x, bias]) {
        x.contiguous()?
            .apply_op2_no_bwd(&bias.contiguous()?, &BiasGelu)
    } else {
        x.broadcast_add(bias)?.gelu_erf()
    }
}

/// The reference: candle's broadcast add and erf GELU.
pub fn bias_gelu_erf_reference(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.broadcast_add(bias)?.gelu_erf()
}

struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, b) = (f32s(x, lx, op)?, f32s(b, lb, op)?);
        let width = match lx.dims() {
            &[_, w] if w == b.len() && w > 0 => w,
            d => candle_core::bail!("{op}: input {d:?} and bias [{}] do not match", b.len()),
        };
        let mut out = uninit::<f32>(x.len());
        // Rows in chunks of ~16k elements: enough work per task to amortise the pool.
        let rows_per_task = (16_384 / width).max(1);
        out.par_chunks_mut(rows_per_task * width)
            .zip(x.par_chunks(rows_per_task * width))
            .for_each(|(o, x)| {
                for (o_row, x_row) in o.chunks_exact_mut(width).zip(x.chunks_exact(width)) {
                    for ((o, &x), &bias) in o_row.iter_mut().zip(x_row).zip(b) {
                        let v = x + bias;
                        o.write(0.5 * v * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2)));
                    }
                }
            });
        // SAFETY: the chunks cover `out`, and every element of each is written.
        let out = unsafe { assume_init(out) };
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn erf_is_within_1e6_of_libm() {
        let mut worst = 0f64;
        for i in -800_000..=800_000 {
            let x = i as f32 * 1e-5;
            let want = libm_erf(x as f64);
            worst = worst.max((erf_f32(x) as f64 - want).abs());
        }
        assert!(worst < 1e-6, "max |erf error| {worst}");
        assert!((erf_f32(10.0) - 1.0).abs() < 1e-6);
        assert!((erf_f32(-10.0) + 1.0).abs() < 1e-6);
    }

    /// erf in f64 by its Taylor series (|x| < 3) and the continued-fraction erfc beyond.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut sum = x;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let t = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (t + f);
            }
            let erfc = (-t * t).exp() / (std::f64::consts::PI.sqrt() * (t + f));
            x.signum() * (1.0 - erfc)
        }
    }

    #[test]
    fn matches_candle_add_then_gelu_erf() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (37, 129), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 129, &dev).unwrap();
        let got = bias_gelu_erf(&x, &b).unwrap();
        let want = bias_gelu_erf_reference(&x, &b).unwrap();
        let err: f32 = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(err < 5e-6, "max abs difference {err}");
    }
}
