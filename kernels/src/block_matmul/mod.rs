//! `y = x · Wᵀ` for GGUF block-quantized weights on the CPU: Q4_1 and Q8_0, the types of
//! SmolLM2's file (Q4_1 linears, a Q8_0 table tied to the output projection) and of most
//! llama.cpp exports.
//!
//! candle 0.11 runs Q4_1 through its scalar `vec_dot_unopt` (~13× slower per decode token
//! than llama.cpp) and Q8_0 through a dot product with one serial accumulator and no sharing
//! of weight loads between activation rows. The computation here is the same as ggml's:
//! activations quantized to 8-bit blocks with f16 scales exactly as ggml stores them, then per
//! block `d_w·d_x·Σ q_w·q_x` (plus `m_w·s_x` for Q4_1, summed 16 blocks a vector). The integer sums run on AVX-512 VNNI
//! (two blocks an instruction, `vpdpbusd`) where the CPU has it, else on AVX2; up to eight
//! activation rows (four on AVX2) share each unpacked weight block. Both SIMD paths keep even and odd blocks
//! in separate float sums and fuse the same multiply-adds, so they give the same bits; each
//! format's scalar `dot_scalar` is the reference they are tested against.

mod q4_1;
mod q8_0;

use crate::disjoint::DisjointWrites;

pub use q4_1::{Q4_1, Q4_1_BLOCK_BYTES};
pub use q8_0::{Q8_0, Q8_0_BLOCK_BYTES};

/// Values per block (every format here).
pub const QK: usize = 32;

/// A weight block format: how one weight row is dotted with `N` quantized activation rows.
pub trait BlockFormat {
    /// llama.cpp's name, for errors.
    const NAME: &'static str;
    /// The value the public entry points dispatch on.
    const TYPE: BlockType;
    /// Bytes of one block of `QK` weights.
    const BLOCK_BYTES: usize;
    /// Whether the activation blocks carry `d·Σq` (ggml's Q8_1, for formats with a min).
    const ACT_SUMS: bool;
    /// One output, scalar: the reference.
    fn dot_scalar(row: &[u8], x: &ActRow) -> f32;
    /// `N` outputs of one weight row, AVX2. Every output gets the same arithmetic whatever `N`
    /// is, so batching rows never changes a result.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const N: usize>(row: &[u8], xs: &[RowPtrs; N]) -> [f32; N];
    /// The same with AVX-512 (F, BW, VNNI), two blocks at a time: the same bits as AVX2.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI, AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const N: usize>(row: &[u8], xs: &[RowPtrs; N]) -> [f32; N];
}

/// One activation row quantized to 8-bit blocks, laid out for wide loads: the values of every
/// block back to back; per block the f16-rounded scale, and per pair of blocks the scale spread
/// over 16 lanes for the AVX-512 path (block `2p`'s in lanes 0–7, `2p + 1`'s in 8–15); for
/// Q8_1 per block `d·Σq`, zero-padded to a multiple of 16 blocks (the min term is summed 16
/// blocks a vector).
pub struct ActRow {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    pair_d: Vec<f32>,
}

impl ActRow {
    /// ggml's `quantize_row_q8_0` / `quantize_row_q8_1`: per block the scale `amax / 127`
    /// (stored as f16), values `round(x / scale)` with the unrounded scale, and for Q8_1 the
    /// sum `scale·Σq` (also through f16).
    fn quantize(x: &[f32], sums: bool) -> Self {
        let nb = x.len() / QK;
        let mut row = Self {
            qs: vec![0; nb * QK],
            d: Vec::with_capacity(nb),
            s: vec![0.0; nb.div_ceil(16) * 16],
            pair_d: vec![0.0; nb.div_ceil(2) * 16],
        };
        for (b, (xs, qs)) in x
            .chunks_exact(QK)
            .zip(row.qs.chunks_exact_mut(QK))
            .enumerate()
        {
            // Eight running maxima, then one: the same value as a serial fold, vectorized.
            let mut lanes = [0f32; 8];
            for c in xs.chunks_exact(8) {
                for (l, &v) in lanes.iter_mut().zip(c) {
                    *l = l.max(v.abs());
                }
            }
            let amax = lanes.iter().fold(0f32, |a, &l| a.max(l));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (v * id).round() as i8;
                sum += i32::from(*q);
            }
            let d16 = half::f16::from_f32(d);
            let s = match sums {
                true => (half::f16::from_f32(sum as f32) * d16).to_f32(),
                false => 0.0,
            };
            let lane = (b / 2) * 16 + (b % 2) * 8;
            row.pair_d[lane..lane + 8].fill(d16.to_f32());
            row.d.push(d16.to_f32());
            row.s[b] = s;
        }
        row
    }

    /// The values of block `b`.
    fn block(&self, b: usize) -> &[i8] {
        &self.qs[b * QK..(b + 1) * QK]
    }

    /// Raw pointers to the values, scales, sums, pair scales and pair sums, for the SIMD
    /// loops (made once per group of rows, not once per weight row).
    #[cfg(target_arch = "x86_64")]
    fn ptrs(&self) -> RowPtrs {
        RowPtrs {
            blocks: self.d.len(),
            qs: self.qs.as_ptr(),
            d: self.d.as_ptr(),
            s: self.s.as_ptr(),
            pair_d: self.pair_d.as_ptr(),
        }
    }
}

/// An [`ActRow`] as the SIMD loops read it: they check `blocks` against the weight row once
/// and then read any block below it unchecked.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct RowPtrs {
    blocks: usize,
    qs: *const i8,
    d: *const f32,
    s: *const f32,
    pair_d: *const f32,
}

/// Which dot product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Simd {
    /// The best this CPU has.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") && has!("f16c") {
                if has!("avx512f") && has!("avx512bw") && has!("avx512vnni") {
                    return Self::Avx512Vnni;
                }
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// Whether this CPU can run `self`.
    fn available(self) -> bool {
        matches!(
            (self, Self::detect()),
            (Self::Scalar, _) | (_, Self::Avx512Vnni) | (Self::Avx2, Self::Avx2)
        )
    }
}

/// The f16 at byte `at` of a block, as f32.
#[inline(always)]
fn f16_at(w: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([w[at], w[at + 1]]).to_f32()
}

/// The f16 at `ptr` (`*const u8`, unaligned), as f32 through F16C; used inside `unsafe`.
/// A macro so that it is written into the SIMD loops: as a function, even `#[inline]`, it
/// stayed a call there, and reading its result back through the stack stalled each block.
#[cfg(target_arch = "x86_64")]
macro_rules! f16c_at {
    ($ptr:expr) => {{
        let bits = i32::from(std::ptr::read_unaligned($ptr as *const u16));
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }};
}
#[cfg(target_arch = "x86_64")]
use f16c_at;

/// The AVX-512 walk over one weight row of `$nb` blocks of `$bytes` bytes at `$w`, two blocks
/// at a time: runs `$body` with `$w0`, `$w1` pointing at blocks `2p` and `2p + 1` (for an odd
/// last block, `$w1` at a zero block and `$full` false). Used inside `unsafe` with the
/// row's `$nb` blocks in bounds.
#[cfg(target_arch = "x86_64")]
macro_rules! each_pair {
    ($w:expr, $nb:expr, $bytes:expr, |$w0:ident, $w1:ident, $p:ident, $full:ident| $body:block) => {{
        let zero_block = [0u8; $bytes];
        for $p in 0..$nb / 2 {
            let $w0: *const u8 = $w.add(2 * $p * $bytes);
            let $w1: *const u8 = $w0.add($bytes);
            let $full = true;
            $body
        }
        if $nb % 2 == 1 {
            let $p = $nb / 2;
            let $w0: *const u8 = $w.add(($nb - 1) * $bytes);
            let $w1: *const u8 = zero_block.as_ptr();
            let $full = false;
            $body
        }
    }};
}
#[cfg(target_arch = "x86_64")]
use each_pair;

/// Activation blocks `2p` and `2p + 1` of row `$x` as 64 bytes; with `$full` false only `2p`'s
/// (an odd last block), the rest read as zeros. Used inside `unsafe`.
#[cfg(target_arch = "x86_64")]
macro_rules! act_pair {
    ($x:expr, $p:expr, $full:expr) => {{
        let at = $x.qs.add(2 * $p * QK);
        match $full {
            true => _mm512_loadu_si512(at as *const __m512i),
            false => _mm512_maskz_loadu_epi8(0xFFFF_FFFF, at),
        }
    }};
}
#[cfg(target_arch = "x86_64")]
use act_pair;

/// `$acc += ($wd · row $x's scales of pair $p) · $prod`: a pair's integer sums (lanes 0–7 block
/// `2p`, 8–15 block `2p + 1`) into the float sums. Used inside `unsafe`.
#[cfg(target_arch = "x86_64")]
macro_rules! add_scaled_pair {
    ($acc:expr, $prod:expr, $wd:expr, $x:expr, $p:expr) => {{
        let scale = _mm512_mul_ps($wd, _mm512_loadu_ps($x.pair_d.add($p * 16)));
        $acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps($prod), $acc);
    }};
}
#[cfg(target_arch = "x86_64")]
use add_scaled_pair;

/// Whether this CPU runs a SIMD path.
pub fn simd_available() -> bool {
    Simd::detect() != Simd::Scalar
}

/// The block types these kernels run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    Q4_1,
    Q8_0,
}

impl BlockType {
    /// llama.cpp's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_1 => Q4_1::NAME,
            Self::Q8_0 => Q8_0::NAME,
        }
    }
}

// The entry points take the type as a value, not as a generic parameter, on purpose: a generic
// function is compiled in the crate that names its type, at that crate's opt-level. Called as
// `block_matmul::<Q4_1>` from `indus-models` (unoptimised in dev and test builds), these
// kernels ran unoptimised there, intrinsics and all, at a few tokens a second. Dispatching here
// compiles every instance in this crate, which every profile optimises.

/// `[m, n]` = `x [m, k]` · `Wᵀ`, `w` the raw blocks of an `[n, k]` weight of type `t`.
pub fn block_matmul(
    t: BlockType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<Vec<f32>, String> {
    dispatch(t, x, m, k, w, n, Simd::detect())
}

/// The same with the dot product `simd` (an error if this CPU lacks it).
pub fn block_matmul_with(
    t: BlockType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    simd: Simd,
) -> Result<Vec<f32>, String> {
    if !simd.available() {
        return Err(format!("{simd:?} is not available on this CPU"));
    }
    dispatch(t, x, m, k, w, n, simd)
}

/// The scalar dot product only: the reference.
pub fn block_matmul_reference(
    t: BlockType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<Vec<f32>, String> {
    dispatch(t, x, m, k, w, n, Simd::Scalar)
}

fn dispatch(
    t: BlockType,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    simd: Simd,
) -> Result<Vec<f32>, String> {
    match t {
        BlockType::Q4_1 => matmul::<Q4_1>(x, m, k, w, n, simd),
        BlockType::Q8_0 => matmul::<Q8_0>(x, m, k, w, n, simd),
    }
}

/// Checks the operands' sizes: `x` is `[m, k]`, `w` holds `n` rows of `k / 32` blocks.
fn check<F: BlockFormat>(x: &[f32], m: usize, k: usize, w: &[u8], n: usize) -> Result<(), String> {
    let name = F::NAME;
    if !k.is_multiple_of(QK) {
        return Err(format!("{name} matmul: k = {k} is not a multiple of {QK}"));
    }
    if x.len() != m * k {
        return Err(format!(
            "{name} matmul: x has {} values, not {m}×{k}",
            x.len()
        ));
    }
    if w.len() != n * (k / QK) * F::BLOCK_BYTES {
        return Err(format!(
            "{name} matmul: weight has {} bytes, not {n} rows of {k} values",
            w.len()
        ));
    }
    Ok(())
}

/// Weight rows per work item.
const ROWS: usize = 16;

/// `N` activation rows against one weight row with the dot product `simd`.
fn dot<F: BlockFormat, const N: usize>(row: &[u8], xs: &Group<N>, simd: Simd) -> [f32; N] {
    match simd {
        // SAFETY: `simd` is available (`Simd::detect`, or checked by `block_matmul_with`).
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512Vnni => unsafe { F::dot_avx512(row, &xs.ptrs) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { F::dot_avx2(row, &xs.ptrs) },
        _ => xs.rows.map(|x| F::dot_scalar(row, x)),
    }
}

/// `N` activation rows, and their pointers for the SIMD loops.
struct Group<'a, const N: usize> {
    rows: [&'a ActRow; N],
    #[cfg(target_arch = "x86_64")]
    ptrs: [RowPtrs; N],
}

impl<'a, const N: usize> Group<'a, N> {
    fn new(rows: [&'a ActRow; N]) -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            ptrs: rows.map(ActRow::ptrs),
            rows,
        }
    }
}

/// Every activation row quantized, on the worker pool when there are many (a prefill's 2 048
/// rows took 4 % of a step on one core).
fn quantize_rows(x: &[f32], m: usize, k: usize, sums: bool) -> Vec<ActRow> {
    if m < 16 {
        return x
            .chunks_exact(k)
            .map(|r| ActRow::quantize(r, sums))
            .collect();
    }
    let mut rows: Vec<Option<ActRow>> = (0..m).map(|_| None).collect();
    let slots = DisjointWrites::new(&mut rows);
    candle_core::utils::barrier_pool().execute_chunked(m, |range| {
        for i in range {
            // SAFETY: slot i is in bounds and only the worker given row i writes it.
            unsafe { slots.write(i, Some(ActRow::quantize(&x[i * k..(i + 1) * k], sums))) };
        }
    });
    rows.into_iter().flatten().collect()
}

fn matmul<F: BlockFormat>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    simd: Simd,
) -> Result<Vec<f32>, String> {
    check::<F>(x, m, k, w, n)?;
    let pool = candle_core::utils::barrier_pool();
    let xq = quantize_rows(x, m, k, F::ACT_SUMS);
    let row_bytes = k / QK * F::BLOCK_BYTES;
    let mut y = vec![0f32; m * n];
    let out = DisjointWrites::new(&mut y);
    // Activation rows `i..i + G` against every weight row of `rows`.
    let group = |i: usize, rows: std::ops::Range<usize>, g: usize| {
        let weight = |j: usize| &w[j * row_bytes..(j + 1) * row_bytes];
        macro_rules! run {
            ($n:literal) => {{
                let xs = Group::<$n>::new(std::array::from_fn(|t| &xq[i + t]));
                for j in rows.clone() {
                    for (t, v) in dot::<F, $n>(weight(j), &xs, simd).into_iter().enumerate() {
                        // SAFETY: (i + t, j) is in bounds and only this item has column j.
                        unsafe { out.write((i + t) * n + j, v) };
                    }
                }
            }};
        }
        match g {
            8 => run!(8),
            4 => run!(4),
            _ => run!(1),
        }
    };
    // Rows per group: eight where AVX-512's 32 registers hold their sums, else four.
    let widest = if simd == Simd::Avx512Vnni { 8 } else { 4 };
    // Workers take runs of weight rows, each row for every activation row: the weights are
    // read once per step whatever m is. candle's barrier pool, not rayon: candle's own
    // quantized matmuls run there, and two pools of spinning workers on the same cores made
    // each wait for the other (a decode step of SmolLM2 went from 17.0 to 10.8 ms).
    // Within an item, a group of activation rows at a time goes through all of its weight
    // rows: the group stays in L1 and each output row is written in runs of `ROWS` columns
    // (with one weight row at a time against all `m`, a 2 048-row prefill wrote every output
    // to its own cache line and ran 1.6× slower).
    let dot_rows = |items: std::ops::Range<usize>| {
        for item in items {
            let rows = item * ROWS..((item + 1) * ROWS).min(n);
            let mut i = 0;
            for g in [widest, 4, 1] {
                while i + g <= m {
                    group(i, rows.clone(), g);
                    i += g;
                }
            }
        }
    };
    pool.execute_chunked(n.div_ceil(ROWS), dot_rows);
    Ok(y)
}

/// Horizontal sum of the two accumulators of one output (even blocks, odd blocks).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum2(a: std::arch::x86_64::__m256, b: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let v = _mm256_add_ps(a, b);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(_mm256_castps256_ps128(v), hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// [`hsum2`] of a 16-lane accumulator's halves (even blocks low, odd blocks high).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn hsum_halves(v: std::arch::x86_64::__m512) -> f32 {
    use std::arch::x86_64::*;
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    hsum2(lo, hi)
}

#[cfg(test)]
pub(crate) mod test_support {
    pub fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    pub fn activations(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| (lcg(&mut s) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// SIMD against the scalar reference, and rows in fours, one by one and alone all giving
    /// the same bits.
    pub fn simd_matches_reference<F: super::BlockFormat>(w: &[u8], n: usize, k: usize) {
        use super::*;
        // Groups of eight (AVX-512), four and one, and a parallel quantization (m ≥ 16).
        let m = 21;
        let x = activations(m * k, 9);
        let r = block_matmul_reference(F::TYPE, &x, m, k, w, n).unwrap();
        let y = block_matmul(F::TYPE, &x, m, k, w, n).unwrap();
        for (a, b) in y.iter().zip(&r) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
        for i in 0..m {
            let alone = block_matmul(F::TYPE, &x[i * k..(i + 1) * k], 1, k, w, n).unwrap();
            assert_eq!(&y[i * n..(i + 1) * n], &alone[..], "row {i}");
        }
        // AVX2 and AVX-512 give the same bits, where this CPU has both.
        if Simd::detect() == Simd::Avx512Vnni {
            let avx2 = block_matmul_with(F::TYPE, &x, m, k, w, n, Simd::Avx2).unwrap();
            assert_eq!(y, avx2);
        } else {
            eprintln!("no AVX-512 VNNI on this CPU: one SIMD path checked");
        }
        assert!(check::<F>(&x, m, k + 1, w, n).is_err());
        assert!(check::<F>(&x, m, k, &w[1..], n).is_err());
    }

    /// The reference against dequantize-then-matmul, within 8-bit activation rounding.
    pub fn reference_matches_dense<F: super::BlockFormat>(
        w: &[u8],
        dense: &[f32],
        n: usize,
        k: usize,
    ) {
        let m = 3;
        let x = activations(m * k, 5);
        let y = super::block_matmul_reference(F::TYPE, &x, m, k, w, n).unwrap();
        for i in 0..m {
            for j in 0..n {
                let exact: f32 = (0..k).map(|t| x[i * k + t] * dense[j * k + t]).sum();
                let scale: f32 = (0..k)
                    .map(|t| (x[i * k + t] * dense[j * k + t]).abs())
                    .sum();
                assert!(
                    (y[i * n + j] - exact).abs() <= 0.02 * scale,
                    "{} vs {exact}",
                    y[i * n + j]
                );
            }
        }
    }
}
