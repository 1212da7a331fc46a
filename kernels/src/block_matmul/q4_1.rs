//! Q4_1 weights (`d`, `m` and 32 nibbles a block: value `d·q + m`) against ggml's Q8_1
//! activation blocks (which also carry `d·Σq`, so the `m` term is one multiply-add a block).

#[cfg(target_arch = "x86_64")]
use super::RowPtrs;
use super::{ActRow, BlockFormat, BlockType, QK};

/// Bytes of one Q4_1 block: f16 scale, f16 min, 16 bytes of nibbles.
pub const Q4_1_BLOCK_BYTES: usize = 20;

/// The Q4_1 format.
pub enum Q4_1 {}

/// A block's scale, min and nibbles.
fn block(w: &[u8]) -> (f32, f32, &[u8]) {
    (super::f16_at(w, 0), super::f16_at(w, 2), &w[4..20])
}

impl BlockFormat for Q4_1 {
    const NAME: &'static str = "Q4_1";
    const TYPE: BlockType = BlockType::Q4_1;
    const BLOCK_BYTES: usize = Q4_1_BLOCK_BYTES;
    const ACT_SUMS: bool = true;

    fn dot_scalar(row: &[u8], x: &ActRow) -> f32 {
        let mut sumf = 0f32;
        for (b, wb) in row.chunks_exact(Q4_1_BLOCK_BYTES).enumerate() {
            let (d, m, qs) = block(wb);
            let xq = x.block(b);
            let mut sumi = 0i32;
            for (j, &q) in qs.iter().enumerate() {
                let (lo, hi) = (i32::from(q & 0x0F), i32::from(q >> 4));
                sumi += lo * i32::from(xq[j]) + hi * i32::from(xq[j + QK / 2]);
            }
            sumf += d * x.d[b] * sumi as f32 + m * x.s[b];
        }
        sumf
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx2<const N: usize>(row: &[u8], xs: &[RowPtrs; N]) -> [f32; N] {
        // SAFETY: the caller checked AVX2 and FMA.
        unsafe { avx2::dot(row, xs) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_avx512<const N: usize>(row: &[u8], xs: &[RowPtrs; N]) -> [f32; N] {
        // SAFETY: the caller checked AVX-512 F/BW/VNNI, AVX2 and FMA.
        unsafe { avx512::dot(row, xs) }
    }
}

/// The mins of blocks `16c..16c + 16` of a weight row (zeros past its `nb` blocks), the
/// weight side of the min term `Σ m_b·s_b`, which both SIMD paths sum 16 blocks a vector (in
/// the same lanes, so with the same bits). Used inside `unsafe` with F16C: `w` points at `nb`
/// blocks.
#[cfg(target_arch = "x86_64")]
macro_rules! chunk_mins {
    ($w:expr, $nb:expr, $c:expr) => {{
        let mut mins = [0f32; 16];
        for (l, m) in mins.iter_mut().enumerate() {
            let b = 16 * $c + l;
            if b < $nb {
                *m = super::super::f16c_at!($w.add(b * Q4_1_BLOCK_BYTES + 2));
            }
        }
        mins
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::{f16c_at, hsum2};
    use super::*;
    use std::arch::x86_64::*;

    /// Block `b` (at `wb`) of one weight row into the sums of every activation row `x` (the
    /// min term is summed apart). A macro, not a function, so that nothing of it stays a
    /// call. Used inside `unsafe`: `wb` points at a whole block and every row of `x` holds
    /// block `b`.
    macro_rules! add_block {
        ($dot:expr, $wb:expr, $x:expr, $b:expr) => {{
            let wb: *const u8 = $wb;
            let d = f16c_at!(wb);
            let packed = _mm_loadu_si128(wb.add(4) as *const __m128i);
            let low_mask = _mm_set1_epi8(0x0F);
            let lo = _mm_and_si128(packed, low_mask);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
            // Values 0..16 are the low nibbles, 16..32 the high ones: ggml's Q4_1 order.
            let w = _mm256_set_m128i(hi, lo);
            for r in 0..N {
                let x = $x[r];
                let xq = _mm256_loadu_si256(x.qs.add($b * QK) as *const __m256i);
                // Unsigned nibbles × signed int8 → pairs summed in i16 (at most 2·15·127).
                let prod16 = _mm256_maddubs_epi16(w, xq);
                let prod32 = _mm256_madd_epi16(prod16, _mm256_set1_epi16(1));
                let scale = _mm256_set1_ps(d * *x.d.add($b));
                $dot[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(prod32), $dot[r]);
            }
        }};
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot<const N: usize>(row: &[u8], x: &[RowPtrs; N]) -> [f32; N] {
        let nb = row.len() / Q4_1_BLOCK_BYTES;
        assert!(
            x.iter().all(|x| x.blocks == nb),
            "activation row of another length"
        );
        let w = row.as_ptr();
        // Even and odd blocks in two sets of sums: two FMA chains instead of one.
        let (mut even, mut odd) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        // The min term over 16 lanes, as two halves.
        let (mut min_lo, mut min_hi) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        // SAFETY: blocks below `nb` lie in `row`, and each activation row has `nb` blocks and
        // its sums `nb.div_ceil(16) * 16` (asserted above).
        unsafe {
            for b in (0..nb & !1).step_by(2) {
                add_block!(even, w.add(b * Q4_1_BLOCK_BYTES), x, b);
                add_block!(odd, w.add((b + 1) * Q4_1_BLOCK_BYTES), x, b + 1);
            }
            if nb % 2 == 1 {
                add_block!(even, w.add((nb - 1) * Q4_1_BLOCK_BYTES), x, nb - 1);
            }
            for c in 0..nb.div_ceil(16) {
                let mins = chunk_mins!(w, nb, c);
                let (lo, hi) = (
                    _mm256_loadu_ps(mins.as_ptr()),
                    _mm256_loadu_ps(mins[8..].as_ptr()),
                );
                for r in 0..N {
                    let s = x[r].s.add(16 * c);
                    min_lo[r] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(s), min_lo[r]);
                    min_hi[r] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(s.add(8)), min_hi[r]);
                }
            }
        }
        let mut out = [0f32; N];
        for r in 0..N {
            out[r] = hsum2(even[r], odd[r]) + hsum2(min_lo[r], min_hi[r]);
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::{act_pair, add_scaled_pair, each_pair, f16c_at, hsum_halves};
    use super::*;
    use std::arch::x86_64::*;

    /// Blocks `2p` (at `w0`) and `2p + 1` (at `w1`; a zero block after an odd last block, with
    /// `$full` false) into the sums of every activation row (the min term is summed apart).
    /// Used inside `unsafe`: both point at whole blocks and every row of `x` holds block `2p`
    /// (and `2p + 1` when `$full`).
    macro_rules! add_pair {
        ($acc:expr, $w0:expr, $w1:expr, $x:expr, $p:expr, $full:expr) => {{
            let (w0, w1): (*const u8, *const u8) = ($w0, $w1);
            let (p0, p1) = (
                _mm_loadu_si128(w0.add(4) as *const __m128i),
                _mm_loadu_si128(w1.add(4) as *const __m128i),
            );
            // 128-bit lanes [p0, p0, p1, p1]; the odd lanes take the high nibbles: block 2p's
            // values 0..32 in lanes 0–1, block 2p+1's in 2–3, as the activations lie.
            let v = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set_m128i(p0, p0)),
                _mm256_set_m128i(p1, p1),
            );
            let shifted = _mm512_srli_epi16::<4>(v);
            let blended = _mm512_mask_blend_epi64(0b1100_1100, v, shifted);
            let w = _mm512_and_si512(blended, _mm512_set1_epi8(0x0F));
            // Scales of the two blocks over 16 lanes: 2p's in 0–7, 2p+1's in 8–15.
            let (d0, d1) = (_mm512_set1_ps(f16c_at!(w0)), _mm512_set1_ps(f16c_at!(w1)));
            let wd = _mm512_mask_blend_ps(0xFF00, d0, d1);
            for r in 0..N {
                let x = $x[r];
                // Sums of four unsigned × signed products in i32 lanes: lanes 0–7 block 2p,
                // 8–15 block 2p+1 (the same lanes AVX2's maddubs + madd fill).
                let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, act_pair!(x, $p, $full));
                add_scaled_pair!($acc[r], prod, wd, x, $p);
            }
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) fn dot<const N: usize>(row: &[u8], x: &[RowPtrs; N]) -> [f32; N] {
        let nb = row.len() / Q4_1_BLOCK_BYTES;
        assert!(
            x.iter().all(|x| x.blocks == nb),
            "activation row of another length"
        );
        let w = row.as_ptr();
        let mut acc = [_mm512_setzero_ps(); N];
        let mut acc_m = [_mm512_setzero_ps(); N];
        // SAFETY: blocks below `nb` lie in `row`; each activation row has `nb` blocks,
        // `nb.div_ceil(2)` pairs and `nb.div_ceil(16) * 16` sums (asserted above); the last
        // odd block is read with its pair's upper half masked off.
        unsafe {
            each_pair!(w, nb, Q4_1_BLOCK_BYTES, |w0, w1, p, full| {
                add_pair!(acc, w0, w1, x, p, full);
            });
            for c in 0..nb.div_ceil(16) {
                let mins = _mm512_loadu_ps(chunk_mins!(w, nb, c).as_ptr());
                for r in 0..N {
                    let s = _mm512_loadu_ps(x[r].s.add(16 * c));
                    acc_m[r] = _mm512_fmadd_ps(mins, s, acc_m[r]);
                }
            }
        }
        let mut out = [0f32; N];
        for r in 0..N {
            out[r] = hsum_halves(acc[r]) + hsum_halves(acc_m[r]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{lcg, reference_matches_dense, simd_matches_reference};
    use super::*;
    use half::f16;

    fn random_q4_1(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::new();
        for _ in 0..n * k / QK {
            let d = f16::from_f32((lcg(&mut s) % 1000) as f32 / 20000.0);
            let m = f16::from_f32(-((lcg(&mut s) % 1000) as f32) / 5000.0);
            out.extend_from_slice(&d.to_le_bytes());
            out.extend_from_slice(&m.to_le_bytes());
            for _ in 0..16 {
                out.push(lcg(&mut s) as u8);
            }
        }
        out
    }

    #[test]
    fn simd_equals_the_scalar_reference() {
        // An even and an odd number of blocks a row.
        for (k, n) in [(576, 37), (608, 9)] {
            simd_matches_reference::<Q4_1>(&random_q4_1(n, k, 1), n, k);
        }
    }

    #[test]
    fn reference_equals_dequantize_then_matmul_within_activation_quantization() {
        let (k, n) = (64, 4);
        let w = random_q4_1(n, k, 3);
        // Dequantize: value j of a block = d·q + m.
        let mut dense = vec![0f32; n * k];
        for (b, wb) in w.chunks_exact(Q4_1_BLOCK_BYTES).enumerate() {
            let (d, mn, qs) = block(wb);
            for (j, &q) in qs.iter().enumerate() {
                dense[b * QK + j] = d * f32::from(q & 0xF) + mn;
                dense[b * QK + j + 16] = d * f32::from(q >> 4) + mn;
            }
        }
        reference_matches_dense::<Q4_1>(&w, &dense, n, k);
    }
}
