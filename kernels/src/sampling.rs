//! Token sampling over a batch of logits, on the device: only the chosen ids come back to the host.
//!
//! Semantics (the CUDA kernel kernels/cuda/sampling.cu and [`sample_reference`] share them):
//! - greedy (temperature < 1e-5 or NaN, or no parameters): the first index of the maximum logit (0 if every logit
//!   is -inf); NaN logits count as -inf; a row with a +inf logit is greedy too (its first +inf);
//! - otherwise, with `x_i = (l_i - max) * (1/T)` (f32, 1/T computed once on the host) and the weight
//!   `w_i = exp_fma(x_i)` ([`crate::fma_exp`]: one formula, the same bits on host and device), a token is kept when
//!   - `top_k > 0`: its logit is at least the k-th largest logit (ties at the threshold are all kept; top_k >=
//!     vocabulary keeps everything),
//!   - `min_p > 0`: `x_i >= ln(min_p)` -- min-p relative to the top token, tested in the log domain against
//!     `ln(min_p)` computed once on the host (NaN min_p is off, like 0),
//!   - `top_p < 1`: its logit is at least the top-p threshold: walking the kept tokens from the largest logit
//!     down, the logit at which the kept mass first reaches `floor(top_p * total)` (at least 1; ties kept);
//! - the kept token is drawn by inverse CDF in vocabulary order with the row's `uniform` in [0, 1).
//!
//! Masses are fixed point (`floor(w * 2^40)` summed in u64), so sums are exact and independent of summation
//! order; the weights are the same bits on both sides, so GPU and CPU pick the same token for every row. (With the
//! device's `expf` and the host's libm `exp`, about one temperature-1 draw in 10^4 over a 128k vocabulary differed.)
//!
//! Compared with the engine's host sampler (src/engine/sampler.rs), which this is meant to replace on the GPU:
//! the same filters in the same order, but ties at the top-k threshold are kept (the host keeps exactly k, lower
//! ids first) and the draw walks vocabulary order (the host walks its candidates sorted by probability when
//! top-k/top-p are set): the same distribution, a different map from the uniform to the token.

use crate::elem::contiguous;
use crate::fma_exp::exp_fma;
use crate::shared::SAMPLING_ROW_BYTES;
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

/// A row's parameters as both sides compute with them: resolved on the host once, so the reciprocal of the
/// temperature and the log of min-p are the same bits for the CPU reference and the kernel (`struct KernelRow` in
/// sampling.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct KernelRow {
    /// 1: greedy (the other fields are unused).
    pub(crate) greedy: u32,
    pub(crate) inv_temperature: f32,
    pub(crate) top_k: u32,
    pub(crate) top_p: f32,
    /// `ln(min_p)`, -inf when min-p is off.
    pub(crate) log_min_p: f32,
    pub(crate) uniform: f32,
}

const _: () = assert!(std::mem::size_of::<KernelRow>() == SAMPLING_ROW_BYTES);

impl From<&SamplingRow> for KernelRow {
    fn from(p: &SamplingRow) -> Self {
        Self {
            greedy: p.is_greedy() as u32,
            inv_temperature: 1.0 / p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            log_min_p: if p.min_p > 0.0 {
                p.min_p.ln()
            } else {
                f32::NEG_INFINITY
            },
            uniform: p.uniform,
        }
    }
}

#[cfg(feature = "cuda")]
// SAFETY: plain #[repr(C)] data of f32/u32 fields, the layout of `struct KernelRow` in sampling.cu (its size is
// asserted on both sides).
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for KernelRow {}

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

/// The fixed-point mass of a weight: exact scaling by 2^40, truncated; NaN and non-positive weights are 0.
fn fixed(w: f32) -> u64 {
    if w > 0.0 { (w * FIXED_ONE) as u64 } else { 0 }
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
            Some(rows) => sample_row(row, &KernelRow::from(&rows[r]), exp_fma),
            None => argmax_reference(row),
        })
        .collect()
}

/// One row, with the weight function as a parameter: [`exp_fma`] is the semantics; tests swap in libm's exp to
/// measure how often two different exps make the draws disagree.
pub(crate) fn sample_row(x: &[f32], p: &KernelRow, exp: fn(f32) -> f32) -> u32 {
    let argmax = argmax_reference(x);
    let mx = sanitize(x[argmax as usize]);
    if p.greedy != 0 || mx == f32::NEG_INFINITY || mx == f32::INFINITY {
        return argmax;
    }
    let vocab = x.len();
    let inv_t = p.inv_temperature;
    // Per token: its key, its scaled log-weight and its fixed-point mass, each computed once.
    let keys: Vec<u32> = x.iter().map(|&v| logit_key(sanitize(v))).collect();
    let logw: Vec<f32> = x.iter().map(|&v| (sanitize(v) - mx) * inv_t).collect();
    let mass: Vec<u64> = logw.iter().map(|&l| fixed(exp(l))).collect();
    let mut thr = 0u32;
    if p.top_k > 0 && (p.top_k as usize) < vocab {
        let mut sorted = keys.clone();
        let k = p.top_k as usize;
        sorted.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        thr = sorted[k - 1];
    }
    let kept = |i: usize, thr: u32| keys[i] >= thr && logw[i] >= p.log_min_p;
    if p.top_p < 1.0 {
        let mut cands: Vec<(u32, u64)> = (0..vocab)
            .filter(|&i| kept(i, thr))
            .map(|i| (keys[i], mass[i]))
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
    let total: u64 = (0..vocab).filter(|&i| kept(i, thr)).map(|i| mass[i]).sum();
    if total == 0 {
        return argmax;
    }
    let target = ((p.uniform as f64 * total as f64) as u64).min(total - 1);
    let mut acc = 0u64;
    for (i, &w) in mass.iter().enumerate() {
        if !kept(i, thr) {
            continue;
        }
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

    fn sample_one(l: &[f32], p: &SamplingRow) -> u32 {
        sample_row(l, &KernelRow::from(p), exp_fma)
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
            assert_eq!(sample_one(&l, &row(1.0, 1, 1.0, 0.0, u)), 1);
        }
    }

    #[test]
    fn draws_follow_the_inverse_cdf_in_vocab_order() {
        // Equal logits: each of 4 tokens owns a quarter of [0, 1).
        let l = [0.0f32; 4];
        let picks: Vec<u32> = [0.0, 0.24, 0.26, 0.6, 0.99]
            .iter()
            .map(|&u| sample_one(&l, &row(1.0, 0, 1.0, 0.0, u)))
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 2, 3]);
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Weights 1, e^-1, e^-2, e^-10 at T = 1.
        let l = [0.0, -1.0, -2.0, -10.0];
        // top_p 0.5: the top token alone holds 1 / 1.503 = 66 % of the mass.
        for u in [0.0, 0.5, 0.99] {
            assert_eq!(sample_one(&l, &row(1.0, 0, 0.5, 0.0, u)), 0);
        }
        // min_p 0.3 keeps tokens 0 and 1 (e^-1 = 0.37); u near 1 lands on token 1, never 2 or 3.
        assert_eq!(sample_one(&l, &row(1.0, 0, 1.0, 0.3, 0.99)), 1);
        // top_k 2 likewise.
        assert_eq!(sample_one(&l, &row(1.0, 2, 1.0, 0.0, 0.99)), 1);
        // No filter: u near 1 reaches the last tokens.
        assert_eq!(sample_one(&l, &row(1.0, 0, 1.0, 0.0, 0.999_999)), 3);
        assert_eq!(sample_one(&l, &row(1.0, 0, 1.0, 0.0, 0.9999)), 2);
    }

    #[test]
    fn ties_at_the_top_k_threshold_are_kept() {
        let l = [1.0, 0.5, 0.5, 0.5, -5.0];
        // k = 2 keeps 1.0 and all three 0.5s; the last of them is reachable.
        assert_eq!(sample_one(&l, &row(1.0, 2, 1.0, 0.0, 0.999)), 3);
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

    #[test]
    fn min_p_is_tested_in_the_log_domain_against_the_hosts_log() {
        // x = (l - max) / T sits exactly on ln(min_p): kept (>=); one ulp below: cut.
        let thr = 0.3f32.ln();
        let below = f32::from_bits(thr.to_bits() + 1); // more negative
        for (l1, want) in [(thr, 1), (below, 0)] {
            let l = [0.0, l1, -30.0];
            assert_eq!(
                sample_one(&l, &row(1.0, 0, 1.0, 0.3, 0.999_999)),
                want,
                "{l1}"
            );
        }
        // NaN and non-positive min_p are off.
        let l = [0.0, -2.0];
        for m in [f32::NAN, 0.0, -1.0] {
            let k = KernelRow::from(&row(1.0, 0, 1.0, m, 0.0));
            assert_eq!(k.log_min_p, f32::NEG_INFINITY);
            assert_eq!(sample_one(&l, &row(1.0, 0, 1.0, m, UNIFORM_LAST)), 1);
        }
    }

    const UNIFORM_LAST: f32 = 1.0 - f32::EPSILON / 2.0;

    #[test]
    fn infinities_nans_and_ties() {
        // A +inf logit makes the row greedy: its first +inf.
        let l = [1.0, f32::INFINITY, 3.0, f32::INFINITY];
        assert_eq!(sample_one(&l, &row(1.0, 0, 1.0, 0.0, 0.99)), 1);
        // All NaN or all -inf: index 0.
        assert_eq!(sample_one(&[f32::NAN; 4], &row(1.0, 0, 0.9, 0.1, 0.5)), 0);
        assert_eq!(
            sample_one(&[f32::NEG_INFINITY; 3], &row(1.0, 3, 1.0, 0.0, 0.5)),
            0
        );
        // -inf and NaN logits are never drawn, whatever the draw.
        let l = [f32::NEG_INFINITY, 0.0, f32::NAN, 0.0, f32::NEG_INFINITY];
        for u in [0.0, 0.3, 0.7, UNIFORM_LAST] {
            let t = sample_one(&l, &row(1.0, 0, 1.0, 0.0, u));
            assert!(t == 1 || t == 3, "{u} -> {t}");
        }
        // top_k at or beyond the vocabulary keeps everything; tiny top_p keeps the tied top tokens only.
        let l = [2.0, 2.0, 1.0, 0.0];
        assert_eq!(sample_one(&l, &row(1.0, 4, 1.0, 0.0, UNIFORM_LAST)), 3);
        assert_eq!(sample_one(&l, &row(1.0, 9, 1.0, 0.0, UNIFORM_LAST)), 3);
        for p in [0.0, 1e-6] {
            assert_eq!(sample_one(&l, &row(1.0, 0, p, 0.0, 0.0)), 0);
            assert_eq!(sample_one(&l, &row(1.0, 0, p, 0.0, UNIFORM_LAST)), 1);
        }
        // A temperature just above the greedy threshold still samples, among the (tied) top tokens.
        assert_eq!(sample_one(&l, &row(1e-5, 0, 1.0, 0.0, UNIFORM_LAST)), 1);
    }

    #[test]
    fn kernel_rows_resolve_the_parameters_on_the_host() {
        let k = KernelRow::from(&row(0.7, 5, 0.9, 0.05, 0.25));
        assert_eq!(k.greedy, 0);
        assert_eq!(k.inv_temperature, 1.0 / 0.7f32);
        assert_eq!(k.log_min_p, 0.05f32.ln());
        assert_eq!((k.top_k, k.top_p, k.uniform), (5, 0.9, 0.25));
        assert_eq!(KernelRow::from(&row(f32::NAN, 0, 1.0, 0.0, 0.0)).greedy, 1);
        assert_eq!(KernelRow::from(&SamplingRow::greedy()).greedy, 1);
    }

    /// How often two different exps (libm's expf and exp_fma, both within about 1 ulp) make a seeded
    /// temperature-1 draw over a large vocabulary disagree: the hazard one shared exp removes. Per row it computes
    /// the exact probability over the uniform draw that the two pick different tokens (the measure of the draws
    /// that fall between the two CDFs' boundaries), and it also draws once per row.
    /// `cargo test --release -p indus-kernels --lib flip_rate -- --ignored --nocapture`
    /// (INDUS_FLIP_ROWS, INDUS_FLIP_VOCAB to change the size; default 20 000 rows of 128 256).
    #[test]
    #[ignore = "a measurement: minutes in a debug build"]
    fn flip_rate_of_two_different_exps() {
        use crate::check::inputs::{SamplingKind, sampling_rows};
        let env = |k: &str, d: usize| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        };
        let (rows, vocab) = (
            env("INDUS_FLIP_ROWS", 20_000),
            env("INDUS_FLIP_VOCAB", 128_256),
        );
        let libm: fn(f32) -> f32 = f32::exp;
        // Per row: (draws differ, masses differ somewhere, exact flip probability).
        let one = |x: &[f32], r: &SamplingRow| -> (bool, bool, f64) {
            let k = KernelRow::from(r);
            let drawn = sample_row(x, &k, exp_fma) != sample_row(x, &k, libm);
            let mx = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let masses = |e: fn(f32) -> f32| -> Vec<u64> {
                x.iter()
                    .map(|&l| fixed(e((l - mx) * k.inv_temperature)))
                    .collect()
            };
            let (a, b) = (masses(exp_fma), masses(libm));
            let (ta, tb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
            // The draws u that pick different tokens: the union of [min(F_a(i), F_b(i)), max(..)) over the
            // boundaries i (both CDFs are non-decreasing, so one sweep measures the union).
            let (mut ca, mut cb, mut p, mut covered) = (0u64, 0u64, 0f64, 0f64);
            for (wa, wb) in a.iter().zip(&b) {
                ca += wa;
                cb += wb;
                let (fa, fb) = (ca as f64 / ta, cb as f64 / tb);
                let (lo, hi) = (fa.min(fb).max(covered), fa.max(fb));
                if hi > lo {
                    p += hi - lo;
                    covered = hi;
                }
            }
            (drawn, a != b, p)
        };
        let (mut drawn, mut differ, mut expected, mut done) = (0usize, 0usize, 0f64, 0usize);
        while done < rows {
            let n = 500.min(rows - done);
            let (l, p) = sampling_rows(SamplingKind::Temperature1, done, n, vocab, 77);
            let per = n.div_ceil(4).max(1);
            let results: Vec<(bool, bool, f64)> = std::thread::scope(|sc| {
                let handles: Vec<_> = l
                    .chunks(vocab * per)
                    .zip(p.chunks(per))
                    .map(|(lc, pc)| {
                        sc.spawn(move || {
                            lc.chunks(vocab)
                                .zip(pc)
                                .map(|(x, r)| one(x, r))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            drawn += results.iter().filter(|r| r.0).count();
            differ += results.iter().filter(|r| r.1).count();
            expected += results.iter().map(|r| r.2).sum::<f64>();
            done += n;
        }
        let rate = expected / rows as f64;
        println!(
            "libm expf vs exp_fma over {rows} temperature-1 rows of {vocab} logits: masses differ in {differ} rows; \
             flip probability per draw {rate:.2e} (exact, averaged over rows; a 1000-token seeded completion: \
             {:.2e}); draws that differed: {drawn}",
            1.0 - (1.0 - rate).powi(1000)
        );
        assert!(differ > 0, "the two exps never gave different masses");
        assert!(rate > 0.0 && rate < 1e-2, "{rate}");
    }
}
