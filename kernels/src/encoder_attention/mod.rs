//! A BERT-family encoder's self-attention over a right-padded batch, straight from the fused
//! q/k/v projection to the context rows the output projection reads: bias add, `q·kᵀ`,
//! masked softmax, `p·v` and the head merge in one op, one task per (sequence, head).
//!
//! Why fused: composed of candle ops it was a bias/split copy, 12 × batch tiny batched
//! matmuls over the padded length, a softmax pass with libm `expf`, another batched matmul and
//! a transpose copy: the matmuls ~6 % and the softmax ~5 % of an all-MiniLM batch of 32 in a
//! profile, copies aside, against ~1.5 % of its FLOPs. Here each
//! sequence works only on its own tokens (padding keys are never read, padding query rows are
//! written as zeros), so a row's result depends on nothing but its own sequence: the same bits
//! in any batch, at any padded length.

use crate::disjoint::DisjointWrites;
use crate::elem::{cpu_f32, f32s};
use crate::uninit::{assume_init, uninit};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// `qkv`: `[b * l, 3 * h]` (q, k then v columns, without their bias), `bias`: `[3 * h]`,
/// `lens[i]` ≤ `l`: sequence `i`'s real tokens. Returns `[b * l, h]`: row `(i, t)` is
/// `softmax(q·kᵀ / √d) · v` over sequence `i`'s first `lens[i]` tokens, heads side by side;
/// padding rows (`t ≥ lens[i]`) are zero.
pub fn padded_attention(
    qkv: &Tensor,
    bias: &Tensor,
    lens: &[usize],
    heads: usize,
) -> Result<Tensor> {
    if cpu_f32(&[qkv, bias]) {
        qkv.contiguous()?.apply_op2_no_bwd(
            &bias.contiguous()?,
            &PaddedAttention {
                lens: lens.to_vec(),
                heads,
            },
        )
    } else {
        padded_attention_reference(qkv, bias, lens, heads)
    }
}

/// The same attention composed of candle ops (any device, any float dtype).
pub fn padded_attention_reference(
    qkv: &Tensor,
    bias: &Tensor,
    lens: &[usize],
    heads: usize,
) -> Result<Tensor> {
    let (rows, h3) = qkv.dims2()?;
    let b = lens.len();
    let l = rows / b.max(1);
    let (h, d) = (h3 / 3, h3 / 3 / heads);
    let qkv = qkv
        .broadcast_add(bias)?
        .reshape((b, l, 3, heads, d))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
    let (mut key_mask, mut row_mask) = (Vec::with_capacity(b * l), Vec::with_capacity(b * l));
    for &n in lens {
        key_mask.extend((0..l).map(|j| if j < n { 0f32 } else { f32::NEG_INFINITY }));
        row_mask.extend((0..l).map(|j| if j < n { 1f32 } else { 0.0 }));
    }
    let dev = qkv.device();
    let key_mask = Tensor::from_vec(key_mask, (b, 1, 1, l), dev)?.to_dtype(qkv.dtype())?;
    let row_mask = Tensor::from_vec(row_mask, (b * l, 1), dev)?.to_dtype(qkv.dtype())?;
    let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(&key_mask)?;
    let e = scores.broadcast_sub(&scores.max_keepdim(3)?)?.exp()?;
    let probs = e.broadcast_div(&e.sum_keepdim(3)?)?;
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((b * l, h))?
        .broadcast_mul(&row_mask)
}

struct PaddedAttention {
    lens: Vec<usize>,
    heads: usize,
}

/// One task's copies of its head's keys (transposed, so a query's scores are a sum of
/// `q[c] · kᵀ[c]` rows that vectorise over the keys) and values, with their bias added once.
#[derive(Default)]
struct HeadScratch {
    keys_t: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
    query: Vec<f32>,
    context: Vec<f32>,
}

impl CustomOp2 for PaddedAttention {
    fn name(&self) -> &'static str {
        "padded-attention"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        bias: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, bias) = (f32s(x, lx, op)?, f32s(bias, lb, op)?);
        let (b, heads, h3) = (self.lens.len(), self.heads, bias.len());
        let rows = match lx.dims() {
            &[rows, w] if w == h3 => rows,
            d => candle_core::bail!("{op}: input {d:?} with a [{h3}] bias"),
        };
        if b == 0 || heads == 0 || h3 % (3 * heads) != 0 || rows % b != 0 {
            candle_core::bail!("{op}: {rows} rows, {b} sequences, {heads} heads, width {h3}");
        }
        let (l, h, d) = (rows / b, h3 / 3, h3 / 3 / heads);
        if self.lens.iter().any(|&n| n == 0 || n > l) {
            candle_core::bail!("{op}: lengths {:?} for a padded length of {l}", self.lens);
        }
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = uninit::<f32>(rows * h);
        let dst = DisjointWrites::new(&mut out);
        (0..b * heads)
            .into_par_iter()
            .for_each_init(HeadScratch::default, |s, task| {
                let (seq, head) = (task / heads, task % heads);
                let n = self.lens[seq];
                let seq_rows = &x[seq * l * h3..(seq + 1) * l * h3];
                let col = |part: usize| part * h + head * d;
                s.gather(seq_rows, bias, n, d, h3, col(1), col(2));
                let q_bias = &bias[col(0)..col(0) + d];
                for t0 in (0..n).step_by(QUERIES) {
                    let block = t0..(t0 + QUERIES).min(n);
                    let queries = block.clone().map(|t| &seq_rows[t * h3 + col(0)..][..d]);
                    s.attend(queries, q_bias, scale, n);
                    for (qi, t) in block.enumerate() {
                        // SAFETY: task (seq, head) alone writes columns head*d.. of its rows.
                        let row = unsafe { dst.slice((seq * l + t) * h + head * d, d) };
                        for (o, &c) in row.iter_mut().zip(&s.context[qi * d..(qi + 1) * d]) {
                            o.write(c);
                        }
                    }
                }
                for t in n..l {
                    // SAFETY: as above; padding rows are zero.
                    let row = unsafe { dst.slice((seq * l + t) * h + head * d, d) };
                    row.iter_mut().for_each(|v| {
                        v.write(0.0);
                    });
                }
            });
        // SAFETY: the tasks together write every row's every head.
        let out = unsafe { assume_init(out) };
        Ok((CpuStorage::F32(out), Shape::from((rows, h))))
    }
}

/// Keys are padded to a multiple of this many, so a score row is whole vectors; the sums
/// of a loop are kept in one vector of this many lanes.
const LANES: usize = 16;
/// Queries attended together, sharing each key and value load.
const QUERIES: usize = 4;

impl HeadScratch {
    /// Copies the head's first `n` keys (transposed, `[d, n_pad]`, zero past `n`) and values
    /// (`[n, d]`) out of the sequence's q/k/v rows, adding their bias.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        &mut self,
        seq_rows: &[f32],
        bias: &[f32],
        n: usize,
        d: usize,
        h3: usize,
        key_col: usize,
        value_col: usize,
    ) {
        let n_pad = n.div_ceil(LANES) * LANES;
        self.keys_t.clear();
        self.keys_t.resize(d * n_pad, 0.0);
        self.values.clear();
        for j in 0..n {
            let row = &seq_rows[j * h3..(j + 1) * h3];
            let k = row[key_col..key_col + d].iter().zip(&bias[key_col..]);
            for (c, (&k, &kb)) in k.enumerate() {
                self.keys_t[c * n_pad + j] = k + kb;
            }
            let v = row[value_col..value_col + d].iter().zip(&bias[value_col..]);
            self.values.extend(v.map(|(&v, &vb)| v + vb));
        }
    }

    /// `self.context[i] = softmax(scale · q_i·kᵀ) · v` over the gathered keys, for up to
    /// `QUERIES` queries at once (missing ones are zero rows, computed and dropped): each
    /// loaded key or value vector feeds every query, with `QUERIES × LANES` sums held in
    /// registers. A query's arithmetic is the same in any slot of a block.
    fn attend<'q>(
        &mut self,
        queries: impl Iterator<Item = &'q [f32]>,
        q_bias: &[f32],
        scale: f32,
        n: usize,
    ) {
        let d = q_bias.len();
        let n_pad = self.keys_t.len() / d;
        self.query.clear();
        self.query.resize(QUERIES * d, 0.0);
        for (dst, q) in self.query.chunks_exact_mut(d).zip(queries) {
            for ((o, &q), &b) in dst.iter_mut().zip(q).zip(q_bias) {
                *o = (q + b) * scale;
            }
        }
        self.scores.clear();
        self.scores.resize(QUERIES * n_pad, 0.0);
        scores(&self.query, &self.keys_t, d, n_pad, &mut self.scores);
        let mut inv = [0f32; QUERIES];
        for (inv, row) in inv.iter_mut().zip(self.scores.chunks_exact_mut(n_pad)) {
            *inv = 1.0 / softmax_weights(row, n);
        }
        self.context.clear();
        self.context.resize(QUERIES * d, 0.0);
        context(&self.scores, &self.values, n_pad, &inv, &mut self.context);
    }
}

/// Whether the AVX-512 products can run (std caches the CPU check).
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `scores_portable`, or its AVX-512 twin where the CPU has it.
fn scores(query: &[f32], keys_t: &[f32], d: usize, n_pad: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512 F; the function checks the buffer sizes.
        return unsafe { avx512::scores(query, keys_t, d, n_pad, out) };
    }
    scores_portable(query, keys_t, d, n_pad, out)
}

/// `context_portable`, or its AVX-512 twin where the CPU has it.
fn context(scores: &[f32], values: &[f32], n_pad: usize, inv: &[f32; QUERIES], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: as in `scores`.
        return unsafe { avx512::context(scores, values, n_pad, inv, out) };
    }
    context_portable(scores, values, n_pad, inv, out)
}

/// `scores[i][j] = query[i] · keys_t[·][j]` for the `QUERIES` query rows (`[QUERIES, d]`)
/// against keys transposed to `[d, n_pad]`; `LANES × QUERIES` sums at a time.
fn scores_portable(query: &[f32], keys_t: &[f32], d: usize, n_pad: usize, scores: &mut [f32]) {
    for j0 in (0..n_pad).step_by(LANES) {
        let mut acc = [[0f32; LANES]; QUERIES];
        for c in 0..d {
            let k = &keys_t[c * n_pad + j0..][..LANES];
            for (acc, q) in acc.iter_mut().zip(query.chunks_exact(d)) {
                let qc = q[c];
                for (a, &k) in acc.iter_mut().zip(k) {
                    *a += qc * k;
                }
            }
        }
        for (acc, row) in acc.iter().zip(scores.chunks_exact_mut(n_pad)) {
            row[j0..j0 + LANES].copy_from_slice(acc);
        }
    }
}

/// `context[i] = inv[i] · Σ_j scores[i][j] · values[j]` (`values`: `[n, d]`, `context`:
/// `[QUERIES, d]`), 16 columns at a time.
fn context_portable(
    scores: &[f32],
    values: &[f32],
    n_pad: usize,
    inv: &[f32; QUERIES],
    context: &mut [f32],
) {
    let d = context.len() / QUERIES;
    for c0 in (0..d).step_by(LANES) {
        let width = LANES.min(d - c0);
        let mut acc = [[0f32; LANES]; QUERIES];
        if width == LANES {
            for (j, v) in values.chunks_exact(d).enumerate() {
                let v = &v[c0..c0 + LANES];
                for (acc, p) in acc.iter_mut().zip(scores.chunks_exact(n_pad)) {
                    let pj = p[j];
                    for (a, &v) in acc.iter_mut().zip(v) {
                        *a += pj * v;
                    }
                }
            }
        } else {
            for (j, v) in values.chunks_exact(d).enumerate() {
                for (acc, p) in acc.iter_mut().zip(scores.chunks_exact(n_pad)) {
                    for (a, &v) in acc.iter_mut().zip(&v[c0..]) {
                        *a += p[j] * v;
                    }
                }
            }
        }
        for ((acc, inv), out) in acc.iter().zip(inv).zip(context.chunks_exact_mut(d)) {
            for (o, a) in out[c0..c0 + width].iter_mut().zip(acc) {
                *o = a * inv;
            }
        }
    }
}

/// Turns a row of scores into unnormalised softmax weights over its first `n` keys (the
/// rest become 0) and returns their sum.
fn softmax_weights(row: &mut [f32], n: usize) -> f32 {
    row[n..].iter_mut().for_each(|s| *s = f32::NEG_INFINITY);
    let mut max = [f32::NEG_INFINITY; LANES];
    for s in row.chunks_exact(LANES) {
        for (m, &s) in max.iter_mut().zip(s) {
            *m = if s > *m { s } else { *m };
        }
    }
    let max = max
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut sum = [0f32; LANES];
    for s in row.chunks_exact_mut(LANES) {
        for (t, s) in sum.iter_mut().zip(s) {
            *s = exp_nonpositive(*s - max);
            *t += *s;
        }
    }
    sum.iter().sum()
}

/// exp(x) for x ≤ 0 (a softmax's shifted scores), within 2 ulp for x ≥ -87 and 0 below
/// (the true value is under 1.7e-38): Cody–Waite reduction and Cephes' degree-5 polynomial
/// in plain `*`/`+`, integer ops and a select, so a loop of it vectorises with or without
/// FMA (libm's `expf` is a call per element).
#[inline]
fn exp_nonpositive(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer.
    const LN2_HI: f32 = 0.693_359_4; // few mantissa bits: k · LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    let underflow = x < -87.0;
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let k = t - SHIFTER;
    // t's low mantissa bits hold k (|k| ≤ 126) in two's complement.
    let k_bits = t.to_bits().wrapping_sub(SHIFTER.to_bits()) as i32;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let e = e * f32::from_bits(((k_bits + 127) as u32) << 23);
    if underflow { 0.0 } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elem::test_tensors::{max_abs_diff as max_diff, normal};

    /// Values spread like a projection's outputs (standard normal × 2), seeded.
    fn randn(shape: &[usize], seed: u64) -> Tensor {
        (normal(shape, seed) * 2.0).unwrap()
    }

    #[test]
    fn exp_is_within_2_ulp_down_to_minus_87() {
        let mut worst = 0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = (x as f64).exp();
            let ulp = (want as f32).to_bits() as f64;
            let got = exp_nonpositive(x);
            let ulps = (got.to_bits() as f64 - ulp).abs();
            worst = worst.max(ulps);
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-87.01), 0.0);
        assert!(exp_nonpositive(-87.0) > 0.0);
    }

    #[test]
    fn matches_the_candle_reference_with_padding_zeroed() {
        // Lengths across LANES boundaries, one sequence without padding.
        for (lens, l, heads, d) in [
            (vec![5, 17, 1, 33], 33, 4, 8),
            (vec![16], 16, 2, 32),
            (vec![3, 40], 40, 3, 64),
            (vec![9, 4], 9, 2, 24), // a whole 16-column block and a tail
        ] {
            let b = lens.len();
            let h = heads * d;
            let qkv = randn(&[b * l, 3 * h], l as u64);
            let bias = randn(&[3 * h], 7);
            let got = padded_attention(&qkv, &bias, &lens, heads).unwrap();
            let want = padded_attention_reference(&qkv, &bias, &lens, heads).unwrap();
            assert_eq!(got.dims(), &[b * l, h]);
            let diff = max_diff(&got, &want);
            assert!(diff < 2e-5, "lens {lens:?}: max diff {diff}");
            let rows: Vec<Vec<f32>> = got.to_vec2().unwrap();
            for (i, &n) in lens.iter().enumerate() {
                for row in &rows[i * l + n..(i + 1) * l] {
                    assert!(row.iter().all(|&v| v == 0.0));
                }
            }
        }
    }

    #[test]
    fn a_sequence_gives_the_same_bits_at_any_padding_and_in_any_batch() {
        let (heads, d, n) = (2, 16, 7);
        let h3 = 3 * heads * d;
        let alone = randn(&[n, h3], 3);
        let bias = randn(&[h3], 4);
        let want: Vec<f32> = padded_attention(&alone, &bias, &[n], heads)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // Padded to 20 behind a 20-token sequence, with garbage in its padding rows.
        let l = 20;
        let other = randn(&[l, h3], 5);
        let padding = randn(&[l - n, h3], 6);
        let batch = Tensor::cat(&[&other, &alone, &padding], 0).unwrap();
        let got = padded_attention(&batch, &bias, &[l, n], heads).unwrap();
        let got: Vec<f32> = got
            .narrow(0, l, n)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn the_avx512_products_match_the_portable_ones() {
        #[cfg(target_arch = "x86_64")]
        {
            if !has_avx512() {
                eprintln!("no AVX-512 F on this CPU: only the portable products run");
                return;
            }
            for (d, n) in [(32usize, 34usize), (24, 16), (64, 5), (8, 1)] {
                let n_pad = n.div_ceil(LANES) * LANES;
                let flat =
                    |len: usize, seed: u64| -> Vec<f32> { randn(&[len], seed).to_vec1().unwrap() };
                let (query, keys_t) = (flat(QUERIES * d, 1), flat(d * n_pad, 2));
                let mut want = vec![0f32; QUERIES * n_pad];
                let mut got = vec![f32::NAN; QUERIES * n_pad];
                scores_portable(&query, &keys_t, d, n_pad, &mut want);
                // SAFETY: the CPU has AVX-512 F; the sizes are as documented.
                unsafe { avx512::scores(&query, &keys_t, d, n_pad, &mut got) };
                let close = |a: &[f32], b: &[f32]| {
                    a.iter()
                        .zip(b)
                        .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
                };
                assert!(close(&got, &want), "scores d={d} n={n}");
                let (values, inv) = (flat(n * d, 3), [0.5, 1.0, 2.0, 0.25]);
                let mut want = vec![0f32; QUERIES * d];
                let mut got = vec![f32::NAN; QUERIES * d];
                context_portable(&keys_t[..QUERIES * n_pad], &values, n_pad, &inv, &mut want);
                // SAFETY: as above.
                unsafe {
                    avx512::context(&keys_t[..QUERIES * n_pad], &values, n_pad, &inv, &mut got)
                };
                assert!(close(&got, &want), "context d={d} n={n}");
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let qkv = randn(&[10, 48], 1);
        let bias = randn(&[48], 2);
        assert!(padded_attention(&qkv, &bias, &[5, 6], 2).is_err());
        assert!(padded_attention(&qkv, &bias, &[5, 0], 2).is_err());
        assert!(padded_attention(&qkv, &bias, &[5, 5], 5).is_err());
        assert!(padded_attention(&qkv, &randn(&[47], 2), &[5, 5], 2).is_err());
    }
}
