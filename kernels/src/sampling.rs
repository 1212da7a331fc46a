//! Token sampling over a batch of logits, on the device: only the chosen ids come back to the host.
//!
//! Semantics (the CUDA kernel kernels/cuda/sampling.cu and [`sample_reference`] share them):
//! - greedy (temperature < 1e-5, or no parameters): the first index of the maximum logit (0 if every logit is
//!   -inf); NaN logits count as -inf;
//! - otherwise `w_i = exp((l_i - max) / T)` (1 for the top token) and a token is kept when
//!   - `top_k > 0`: its logit is at least the k-th largest logit (ties at the threshold are all kept),
//!   - `min_p > 0`: `w_i >= min_p` (min-p relative to the top token),
//!   - `top_p < 1`: its logit is at least the top-p threshold: walking the kept tokens from the largest logit
//!     down, the logit at which the kept mass first reaches `floor(top_p * total)` (ties kept);
//! - the kept token is drawn by inverse CDF in vocabulary order with the row's `uniform` in [0, 1).
//!
//! Masses are fixed point (`floor(w * 2^40)` summed in u64), so sums are exact and independent of summation
//! order: GPU and CPU pick the same token unless the device's `expf` and the host's `exp` round one weight
//! differently right at a boundary.
//!
//! Compared with the engine's host sampler (src/engine/sampler.rs), which this is meant to replace on the GPU:
//! the same filters in the same order, but ties at the top-k threshold are kept (the host keeps exactly k, lower
//! ids first) and the draw walks vocabulary order (the host walks its candidates sorted by probability when
//! top-k/top-p are set): the same distribution, a different map from the uniform to the token.

use crate::elem::contiguous;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Sampling parameters of one row of logits, as the kernel reads them (`#[repr(C)]`, 20 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingRow {
    pub temperature: f32,
    /// 0: off.
    pub top_k: u32,
    /// >= 1: off.
    pub top_p: f32,
    /// <= 0: off.
    pub min_p: f32,
    /// The row's uniform draw in [0, 1), from the request's seeded RNG.
    pub uniform: f32,
}

impl SamplingRow {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            uniform: 0.0,
        }
    }

    pub fn is_greedy(&self) -> bool {
        // The same test as the engine's SamplingParams::is_greedy; NaN counts as greedy.
        self.temperature.is_nan() || self.temperature < 1e-5
    }
}

#[cfg(feature = "cuda")]
// SAFETY: plain #[repr(C)] data of f32/u32 fields, the layout of `struct SamplingRow` in sampling.cu.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for SamplingRow {}

const FIXED_ONE: f32 = 1_099_511_627_776.0; // 2^40

fn sanitize(v: f32) -> f32 {
    if v.is_nan() { f32::NEG_INFINITY } else { v }
}

/// Order-preserving map of a logit to a u32 (the radix-select key of the kernel).
pub fn logit_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn fixed(w: f32) -> u64 {
    (w * FIXED_ONE) as u64
}

/// First index of the maximum (NaN as -inf); 0 when every logit is -inf.
pub fn argmax_reference(row: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        let v = sanitize(v);
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// The CPU reference of the device sampler: one token per row of `logits` (`[rows.len(), vocab]`, row-major).
/// `rows = None` is greedy for every row.
pub fn sample_reference(logits: &[f32], vocab: usize, rows: Option<&[SamplingRow]>) -> Vec<u32> {
    if vocab == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(vocab)
        .enumerate()
        .map(|(r, row)| match rows {
            Some(rows) => sample_row(row, &rows[r]),
            None => argmax_reference(row),
        })
        .collect()
}

fn sample_row(x: &[f32], p: &SamplingRow) -> u32 {
    let argmax = argmax_reference(x);
    let mx = sanitize(x[argmax as usize]);
    if p.is_greedy() || mx == f32::NEG_INFINITY {
        return argmax;
    }
    let vocab = x.len();
    let inv_t = 1.0 / p.temperature;
    let w_of = |l: f32| ((l - mx) * inv_t).exp();
    let mut thr = 0u32;
    if p.top_k > 0 && (p.top_k as usize) < vocab {
        let mut keys: Vec<u32> = x.iter().map(|&v| logit_key(sanitize(v))).collect();
        let k = p.top_k as usize;
        keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        thr = keys[k - 1];
    }
    let kept = |l: f32, thr: u32| logit_key(l) >= thr && (p.min_p <= 0.0 || w_of(l) >= p.min_p);
    if p.top_p < 1.0 {
        let mut cands: Vec<(u32, u64)> = x
            .iter()
            .map(|&v| sanitize(v))
            .filter(|&l| kept(l, thr))
            .map(|l| (logit_key(l), fixed(w_of(l))))
            .collect();
        let total: u64 = cands.iter().map(|c| c.1).sum();
        if total > 0 {
            let need = ((p.top_p as f64 * total as f64) as u64).max(1);
            cands.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
            let mut acc = 0u64;
            for (key, w) in cands {
                acc += w;
                if acc >= need {
                    thr = thr.max(key);
                    break;
                }
            }
        }
    }
    let weights: Vec<u64> = x
        .iter()
        .map(|&v| sanitize(v))
        .map(|l| if kept(l, thr) { fixed(w_of(l)) } else { 0 })
        .collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return argmax;
    }
    let target = ((p.uniform as f64 * total as f64) as u64).min(total - 1);
    let mut acc = 0u64;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0 && acc <= target && target < acc + w {
            return i as u32;
        }
        acc += w;
    }
    argmax
}

struct Sample {
    rows: Option<Vec<SamplingRow>>,
}

/// Greedy ids of `logits` (`[batch, vocab]`, f32): `[batch]` u32 on the logits' device.
pub fn argmax(logits: &Tensor) -> Result<Tensor> {
    logits.apply_op1_no_bwd(&Sample { rows: None })
}

/// One sampled id per row of `logits` (`[batch, vocab]`, f32) with that row's parameters: `[batch]` u32 on the
/// logits' device. See the module docs for the exact semantics.
pub fn sample(logits: &Tensor, rows: &[SamplingRow]) -> Result<Tensor> {
    if logits.rank() != 2 || logits.dim(0)? != rows.len() {
        candle_core::bail!(
            "sample: logits {:?} for {} parameter rows",
            logits.dims(),
            rows.len()
        );
    }
    logits.apply_op1_no_bwd(&Sample {
        rows: Some(rows.to_vec()),
    })
}

impl CustomOp1 for Sample {
    fn name(&self) -> &'static str {
        "sample"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (batch, vocab) = match l.dims() {
            &[b, v] => (b, v),
            d => candle_core::bail!("sample: logits must be [batch, vocab], got {d:?}"),
        };
        let x = match s {
            CpuStorage::F32(x) => contiguous(x, l, "sample")?,
            other => candle_core::bail!(
                "sample: logits must be f32, got {:?}",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        };
        let ids = sample_reference(x, vocab, self.rows.as_deref());
        debug_assert_eq!(ids.len(), batch);
        Ok((CpuStorage::U32(ids), Shape::from(batch)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::sampling::forward(s, l, self.rows.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: f32, k: u32, p: f32, min_p: f32, u: f32) -> SamplingRow {
        SamplingRow {
            temperature: t,
            top_k: k,
            top_p: p,
            min_p,
            uniform: u,
        }
    }

    #[test]
    fn keys_preserve_order() {
        let vals = [
            f32::NEG_INFINITY,
            -1e30,
            -2.5,
            -1.0,
            -0.0,
            0.0,
            1e-30,
            1.0,
            3.5,
            f32::INFINITY,
        ];
        for w in vals.windows(2) {
            assert!(logit_key(w[0]) <= logit_key(w[1]), "{w:?}");
        }
    }

    #[test]
    fn greedy_is_first_max_and_nan_is_ignored() {
        let l = [1.0, f32::NAN, 3.0, 3.0, -1.0];
        assert_eq!(sample_reference(&l, 5, None), vec![2]);
        assert_eq!(
            sample_reference(&l, 5, Some(&[SamplingRow::greedy()])),
            vec![2]
        );
        assert_eq!(sample_reference(&[f32::NEG_INFINITY; 3], 3, None), vec![0]);
    }

    #[test]
    fn top_k_one_is_argmax_whatever_the_draw() {
        let l = [0.1, 2.0, 1.9, -3.0];
        for u in [0.0, 0.3, 0.999] {
            assert_eq!(sample_row(&l, &row(1.0, 1, 1.0, 0.0, u)), 1);
        }
    }

    #[test]
    fn draws_follow_the_inverse_cdf_in_vocab_order() {
        // Equal logits: each of 4 tokens owns a quarter of [0, 1).
        let l = [0.0f32; 4];
        let picks: Vec<u32> = [0.0, 0.24, 0.26, 0.6, 0.99]
            .iter()
            .map(|&u| sample_row(&l, &row(1.0, 0, 1.0, 0.0, u)))
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 2, 3]);
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Weights 1, e^-1, e^-2, e^-10 at T = 1.
        let l = [0.0, -1.0, -2.0, -10.0];
        // top_p 0.5: the top token alone holds 1 / 1.503 = 66 % of the mass.
        for u in [0.0, 0.5, 0.99] {
            assert_eq!(sample_row(&l, &row(1.0, 0, 0.5, 0.0, u)), 0);
        }
        // min_p 0.3 keeps tokens 0 and 1 (e^-1 = 0.37); u near 1 lands on token 1, never 2 or 3.
        assert_eq!(sample_row(&l, &row(1.0, 0, 1.0, 0.3, 0.99)), 1);
        // top_k 2 likewise.
        assert_eq!(sample_row(&l, &row(1.0, 2, 1.0, 0.0, 0.99)), 1);
        // No filter: u near 1 reaches the last tokens.
        assert_eq!(sample_row(&l, &row(1.0, 0, 1.0, 0.0, 0.999_999)), 3);
        assert_eq!(sample_row(&l, &row(1.0, 0, 1.0, 0.0, 0.9999)), 2);
    }

    #[test]
    fn ties_at_the_top_k_threshold_are_kept() {
        let l = [1.0, 0.5, 0.5, 0.5, -5.0];
        // k = 2 keeps 1.0 and all three 0.5s; the last of them is reachable.
        assert_eq!(sample_row(&l, &row(1.0, 2, 1.0, 0.0, 0.999)), 3);
    }

    #[test]
    fn op_matches_reference_on_cpu() {
        let dev = candle_core::Device::Cpu;
        let logits: Vec<f32> = (0..3 * 7).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let t = Tensor::from_slice(&logits, (3, 7), &dev).unwrap();
        let rows = [
            row(0.7, 0, 0.9, 0.0, 0.4),
            SamplingRow::greedy(),
            row(1.3, 3, 1.0, 0.05, 0.8),
        ];
        let got: Vec<u32> = sample(&t, &rows).unwrap().to_vec1().unwrap();
        assert_eq!(got, sample_reference(&logits, 7, Some(&rows)));
        let greedy: Vec<u32> = argmax(&t).unwrap().to_vec1().unwrap();
        assert_eq!(greedy, sample_reference(&logits, 7, None));
    }
}
