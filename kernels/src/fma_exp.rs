//! The sampler's exp: one explicitly specified formula, evaluated bit for bit the same on the host
//! ([`exp_fma`], Rust) and on the device (`indus_exp` in kernels/cuda/fma_exp.cuh), with the constants of
//! [`crate::shared`].
//!
//! Why: seeded sampling must pick the same token on CPU and GPU. The token is chosen by an inverse CDF over weights
//! `exp((l - max) / T)`; CUDA's `expf` (hardware exp2 plus a correction, up to 2 ulp) and the host's libm `exp`
//! (about 0.5 ulp) round some weights differently, and over a 128k vocabulary that moves the draw's boundary often
//! enough to flip about one temperature-1 draw in 10^4 -- a seeded 1 000-token completion then diverges with a
//! probability of about 10 %. One formula on both sides removes the disagreement instead of making it rarer.
//!
//! The specification (every step an IEEE-754 binary32 operation rounding to nearest-even):
//! 1. NaN in, the same NaN out.
//! 2. `xc = min(max(x, X_MIN), X_MAX)` (-104, 89).
//! 3. `kf = fma(xc, LOG2E, S) - S` with `S = 1.5 * 2^23`: `xc * log2 e` rounded to the nearest integer (ties to
//!    even), exactly; `k = kf` as an integer in [-150, 128].
//! 4. `k < K_MIN` (-125): the result is +0 (true values below 2^-125.5, never a subnormal).
//! 5. `r = fma(kf, -LN2_HI, xc)`, then `r = fma(kf, -LN2_LO, r)` (|r| <= ~0.347).
//! 6. `e = C7; e = fma(e, r, C6); ... e = fma(e, r, C2); e = fma(e, r, 1); e = fma(e, r, 1)`.
//! 7. `k == 128`: `e = e * 2, k = 127` (exact). The result is `e * 2^k` with `2^k` built from its bits: an exact
//!    scaling of a normal number (or +inf on overflow).
//!
//! Why host and device agree bit for bit: each step is a correctly rounded IEEE operation on both (`fmaf` is the
//! fused FFMA on the GPU and `f32::mul_add` -- a fused instruction or libm's correctly rounded `fmaf` -- on the
//! host; the device's subtraction and multiplication are written `__fsub_rn`/`__fmul_rn`, which nvcc never
//! contracts into an FMA); nothing depends on flush-to-zero (no subnormal is produced, and a subnormal input gives
//! k = 0 and `e = 1` whether or not it is flushed), on `-prec-div` or on fast-math (no division, square root or
//! library call). The integration test `kernels/tests/fma_exp_host_c.rs` compiles the very header the kernel
//! includes as host C with gcc and checks the bits on 10^6 inputs; `indus-gpu-check` checks them on the GPU.
//!
//! Accuracy: within 2 ulp of the true exp over the whole range above 2^-125 (tested against f64).

use crate::shared::{
    EXP_C2, EXP_C3, EXP_C4, EXP_C5, EXP_C6, EXP_C7, EXP_K_MIN, EXP_LN2_HI, EXP_LN2_LO, EXP_LOG2E,
    EXP_SHIFTER, EXP_X_MAX, EXP_X_MIN,
};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// exp(x) by the formula in the module docs; the device's `indus_exp` returns the same bits.
#[inline]
pub fn exp_fma(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    // x is not NaN here: clamp is the device's fminf(fmaxf(x, X_MIN), X_MAX).
    let xc = x.clamp(EXP_X_MIN, EXP_X_MAX);
    let kf = xc.mul_add(EXP_LOG2E, EXP_SHIFTER) - EXP_SHIFTER;
    let mut k = kf as i32;
    if k < EXP_K_MIN {
        return 0.0;
    }
    let r = kf.mul_add(-EXP_LN2_HI, xc);
    let r = kf.mul_add(-EXP_LN2_LO, r);
    let mut e = EXP_C7.mul_add(r, EXP_C6);
    e = e.mul_add(r, EXP_C5);
    e = e.mul_add(r, EXP_C4);
    e = e.mul_add(r, EXP_C3);
    e = e.mul_add(r, EXP_C2);
    e = e.mul_add(r, 1.0);
    e = e.mul_add(r, 1.0);
    if k > 127 {
        e *= 2.0;
        k = 127;
    }
    e * f32::from_bits(((k + 127) as u32) << 23)
}

/// Deterministic test inputs for the exp: the sampling domain (x <= 0), positive values up to overflow, the
/// rounding boundaries of k (`(j + 1/2) ln2` give or take a few ulp), the underflow and overflow edges, tiny and
/// subnormal values, random bit patterns (NaNs and infinities included) and the special values. The host-C test
/// and `indus-gpu-check` use the same inputs.
pub fn exp_test_inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let unit = |u: u64| (u >> 40) as f32 / (1u64 << 24) as f32;
    let specials = [
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        EXP_X_MIN,
        EXP_X_MAX,
        88.722_83,
        88.722_84,
        -87.336_55,
        -86.643_4,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x8000_0001),
        f32::MAX,
        f32::MIN,
    ];
    let mut v: Vec<f32> = specials.to_vec();
    while v.len() < n {
        let u = next();
        let x = match v.len() % 10 {
            // The sampling domain: (l - max) / T <= 0, mostly within a few dozen of 0.
            0..=3 => -unit(u) * 104.0,
            4 => -unit(u) * 8.0,
            5 => unit(u) * 89.0,
            // Rounding boundaries of k: (j + 1/2) ln2, +- up to 8 ulp.
            6 => {
                let j = (u % 279) as i32 - 150;
                let b = ((j as f64 + 0.5) * std::f64::consts::LN_2) as f32;
                let d = ((u >> 16) % 17) as i32 - 8;
                f32::from_bits((b.to_bits() as i32 + d) as u32)
            }
            // Tiny magnitudes down to subnormals.
            7 => {
                let e = (u % 150) as u32;
                let bits = (e << 23) | ((u >> 32) as u32 & 0x7f_ffff) | ((u as u32 & 1) << 31);
                f32::from_bits(bits)
            }
            // Any bit pattern at all.
            8 => f32::from_bits((u >> 32) as u32),
            // Near the underflow edge (k = K_MIN) and the overflow edge.
            _ => {
                let base: f32 = if u & 1 == 0 { -86.99 } else { 88.7 };
                f32::from_bits((base.to_bits() as i32 + ((u >> 8) % 2001) as i32 - 1000) as u32)
            }
        };
        v.push(x);
    }
    v.truncate(n);
    v
}

struct FmaExp;

/// [`exp_fma`] of every element of an f32 tensor, on its device (the CUDA kernel `fma_exp_f32` on the GPU): how
/// `indus-gpu-check` compares the device formula with the host's bit for bit.
pub fn exp_fma_tensor(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&FmaExp)
}

impl CustomOp1 for FmaExp {
    fn name(&self) -> &'static str {
        "fma-exp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(x) => {
                let x = crate::elem::contiguous(x, l, "fma-exp")?;
                Ok((
                    CpuStorage::F32(x.iter().map(|&v| exp_fma(v)).collect()),
                    l.shape().clone(),
                ))
            }
            other => Err(crate::elem::unsupported("fma-exp", other)),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::sampling::fma_exp(s, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite non-negative f32 values.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn constants_split_ln2_and_shift_exactly() {
        let ln2 = EXP_LN2_HI as f64 + EXP_LN2_LO as f64;
        // hi + lo carries ln2 to ~2^-50 (hi alone: 2^-26), what the reduction needs for |k| <= 150.
        assert!((ln2 - std::f64::consts::LN_2).abs() < 2e-16, "{ln2}");
        assert!((EXP_LN2_HI as f64 - std::f64::consts::LN_2).abs() > 1e-9);
        // The shifter rounds to the nearest integer, ties to even.
        for (x, k) in [
            (0.5f32, 0.0f32),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, -0.0),
            (-1.5, -2.0),
        ] {
            let kf = x.mul_add(1.0, EXP_SHIFTER) - EXP_SHIFTER;
            assert_eq!(kf, k, "{x}");
        }
    }

    #[test]
    fn special_values() {
        assert_eq!(exp_fma(0.0), 1.0);
        assert_eq!(exp_fma(-0.0), 1.0);
        assert_eq!(exp_fma(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_fma(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_fma(89.0), f32::INFINITY);
        assert!(exp_fma(f32::NAN).is_nan());
        assert_eq!(exp_fma(-1000.0), 0.0);
        assert_eq!(exp_fma(f32::from_bits(1)), 1.0);
        // exp(88.72) is just below f32::MAX: finite, through the k = 128 path.
        let big = exp_fma(88.72);
        assert!(big.is_finite() && big > 3.3e38, "{big}");
        // Never a subnormal.
        for x in exp_test_inputs(200_000, 3) {
            let y = exp_fma(x);
            assert!(
                y.is_nan() || y == 0.0 || y.is_normal() || y.is_infinite(),
                "{x} -> {y}"
            );
        }
    }

    #[test]
    fn within_two_ulp_of_the_true_exp() {
        let mut worst = (0u32, 0f32);
        let mut check = |x: f32| {
            let want = (x as f64).exp();
            let got = exp_fma(x);
            if want >= 2f64.powi(-125) && want < f32::MAX as f64 {
                let u = ulps(got, want as f32);
                if u > worst.0 {
                    worst = (u, x);
                }
            }
        };
        for x in exp_test_inputs(1_000_000, 1) {
            if x.is_finite() {
                check(x);
            }
        }
        // And every f32 in [-1, 1] with a stride (the polynomial's whole interval, many times over).
        let (lo, hi) = ((-1.0f32).to_bits(), 1.0f32.to_bits());
        for b in (0..hi).step_by(97).chain((0x8000_0000..lo).step_by(97)) {
            check(f32::from_bits(b));
        }
        assert!(
            worst.0 <= 2,
            "worst error {} ulp at x = {}",
            worst.0,
            worst.1
        );
        println!("exp_fma: worst error {} ulp (at x = {})", worst.0, worst.1);
    }

    #[test]
    fn monotone_on_the_sampling_domain() {
        // Weights must not invert the order of logits: exp_fma is non-decreasing on [-104, 0].
        let mut prev = 0.0f32;
        let mut x = -104.0f32;
        while x <= 0.0 {
            let y = exp_fma(x);
            assert!(y >= prev, "exp_fma({x}) = {y} < {prev}");
            prev = y;
            x = f32::from_bits(if x < 0.0 { x.to_bits() - 61 } else { 1 });
            if x > 0.0 {
                break;
            }
        }
    }

    #[test]
    fn inputs_cover_every_class() {
        let v = exp_test_inputs(100_000, 7);
        assert_eq!(v.len(), 100_000);
        assert!(v.iter().any(|x| x.is_nan()));
        assert!(v.iter().any(|x| x.is_subnormal()));
        assert!(v.iter().filter(|&&x| (-104.0..=0.0).contains(&x)).count() > 40_000);
        assert!(v.iter().any(|&x| x > 88.72 && x < 89.0));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&v) == bits(&exp_test_inputs(100_000, 7)),
            "deterministic"
        );
    }
}
