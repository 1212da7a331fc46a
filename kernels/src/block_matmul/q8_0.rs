//! Q8_0 weights (an f16 scale and 32 signed bytes a block) against ggml's Q8_0 activation
//! blocks: the format of tied embedding / output tables in most llama.cpp exports, where the
//! output projection is the largest single matmul of a decode step.

#[cfg(target_arch = "x86_64")]
use super::RowPtrs;
use super::{ActRow, BlockFormat, BlockType, QK};

/// Bytes of one Q8_0 block: f16 scale, 32 signed bytes.
pub const Q8_0_BLOCK_BYTES: usize = 34;

/// The Q8_0 format.
pub enum Q8_0 {}

/// A block's scale and values.
fn block(w: &[u8]) -> (f32, &[u8]) {
    (super::f16_at(w, 0), &w[2..34])
}

impl BlockFormat for Q8_0 {
    const NAME: &'static str = "Q8_0";
    const TYPE: BlockType = BlockType::Q8_0;
    const BLOCK_BYTES: usize = Q8_0_BLOCK_BYTES;
    const ACT_SUMS: bool = false;

    fn dot_scalar(row: &[u8], x: &ActRow) -> f32 {
        let mut sumf = 0f32;
        for (b, wb) in row.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
            let (d, qs) = block(wb);
            let sumi: i32 = qs
                .iter()
                .zip(x.block(b))
                .map(|(&w, &x)| i32::from(w as i8) * i32::from(x))
                .sum();
            sumf += d * x.d[b] * sumi as f32;
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::{f16c_at, hsum2};
    use super::*;
    use std::arch::x86_64::*;

    /// Block `b` (at `wb`) of one weight row into the sums of every activation row `x`. A
    /// macro, not a function, so that nothing of it stays a call. Used inside `unsafe`: `wb`
    /// points at a whole block and every row of `x` holds block `b`.
    macro_rules! add_block {
        ($sums:expr, $wb:expr, $x:expr, $b:expr) => {{
            let wb: *const u8 = $wb;
            let d = f16c_at!(wb);
            let w = _mm256_loadu_si256(wb.add(2) as *const __m256i);
            // maddubs multiplies unsigned by signed: |w| times x carrying w's sign (ggml's
            // trick).
            let w_abs = _mm256_sign_epi8(w, w);
            for r in 0..N {
                let x = $x[r];
                let xq = _mm256_loadu_si256(x.qs.add($b * QK) as *const __m256i);
                // Pairs summed in i16: at most 2·128·127, no saturation.
                let prod16 = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(xq, w));
                let prod32 = _mm256_madd_epi16(prod16, _mm256_set1_epi16(1));
                let scale = _mm256_set1_ps(d * *x.d.add($b));
                $sums[r] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(prod32), $sums[r]);
            }
        }};
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn dot<const N: usize>(row: &[u8], x: &[RowPtrs; N]) -> [f32; N] {
        let nb = row.len() / Q8_0_BLOCK_BYTES;
        assert!(
            x.iter().all(|x| x.blocks == nb),
            "activation row of another length"
        );
        let w = row.as_ptr();
        // Even and odd blocks in two sets of sums: two FMA chains instead of one.
        let (mut even, mut odd) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        // SAFETY: blocks below `nb` lie in `row`, and each activation row has `nb` blocks
        // (asserted above).
        unsafe {
            for b in (0..nb & !1).step_by(2) {
                add_block!(even, w.add(b * Q8_0_BLOCK_BYTES), x, b);
                add_block!(odd, w.add((b + 1) * Q8_0_BLOCK_BYTES), x, b + 1);
            }
            if nb % 2 == 1 {
                add_block!(even, w.add((nb - 1) * Q8_0_BLOCK_BYTES), x, nb - 1);
            }
        }
        let mut out = [0f32; N];
        for r in 0..N {
            out[r] = hsum2(even[r], odd[r]);
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
    /// `$full` false) into the sums of every activation row. Used inside `unsafe`: both point
    /// at whole blocks and every row of `x` holds block `2p` (and `2p + 1` when `$full`).
    macro_rules! add_pair {
        ($acc:expr, $w0:expr, $w1:expr, $x:expr, $p:expr, $full:expr) => {{
            let (w0, w1): (*const u8, *const u8) = ($w0, $w1);
            let w = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_loadu_si256(w0.add(2) as *const __m256i)),
                _mm256_loadu_si256(w1.add(2) as *const __m256i),
            );
            // |w| times x carrying w's sign, as the AVX2 path (vpdpbusd is unsigned × signed).
            let w_abs = _mm512_abs_epi8(w);
            let negative = _mm512_movepi8_mask(w);
            let wd = _mm512_mask_blend_ps(
                0xFF00,
                _mm512_set1_ps(f16c_at!(w0)),
                _mm512_set1_ps(f16c_at!(w1)),
            );
            for r in 0..N {
                let x = $x[r];
                let xq = act_pair!(x, $p, $full);
                let signed = _mm512_mask_sub_epi8(xq, negative, _mm512_setzero_si512(), xq);
                let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w_abs, signed);
                add_scaled_pair!($acc[r], prod, wd, x, $p);
            }
        }};
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub(super) fn dot<const N: usize>(row: &[u8], x: &[RowPtrs; N]) -> [f32; N] {
        let nb = row.len() / Q8_0_BLOCK_BYTES;
        assert!(
            x.iter().all(|x| x.blocks == nb),
            "activation row of another length"
        );
        let w = row.as_ptr();
        let mut acc = [_mm512_setzero_ps(); N];
        // SAFETY: blocks below `nb` lie in `row`; each activation row has `nb` blocks and
        // `nb.div_ceil(2)` pairs (asserted above); the last odd block is read with its pair's
        // upper half masked off.
        unsafe {
            each_pair!(w, nb, Q8_0_BLOCK_BYTES, |w0, w1, p, full| {
                add_pair!(acc, w0, w1, x, p, full);
            });
        }
        let mut out = [0f32; N];
        for r in 0..N {
            out[r] = hsum_halves(acc[r]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{lcg, reference_matches_dense, simd_matches_reference};
    use super::*;
    use half::f16;

    fn random_q8_0(n: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::new();
        for b in 0..n * k / QK {
            let d = f16::from_f32((lcg(&mut s) % 1000) as f32 / 50000.0);
            out.extend_from_slice(&d.to_le_bytes());
            for j in 0..QK {
                // Every block of the first row holds -128, the value whose |w| needs all 8 bits.
                let q = if b < k / QK && j == 0 {
                    0x80
                } else {
                    lcg(&mut s) as u8
                };
                out.push(q);
            }
        }
        out
    }

    #[test]
    fn simd_equals_the_scalar_reference() {
        // An even and an odd number of blocks a row.
        for (k, n) in [(576, 37), (608, 9)] {
            simd_matches_reference::<Q8_0>(&random_q8_0(n, k, 1), n, k);
        }
    }

    #[test]
    fn reference_equals_dequantize_then_matmul_within_activation_quantization() {
        let (k, n) = (64, 4);
        let w = random_q8_0(n, k, 3);
        let mut dense = vec![0f32; n * k];
        for (b, wb) in w.chunks_exact(Q8_0_BLOCK_BYTES).enumerate() {
            let (d, qs) = block(wb);
            for (j, &q) in qs.iter().enumerate() {
                dense[b * QK + j] = d * f32::from(q as i8);
            }
        }
        reference_matches_dense::<Q8_0>(&w, &dense, n, k);
    }
}
