//! `y = x · Wᵀ` for a GGUF Q4_1 weight on the CPU, with AVX2.
//!
//! candle 0.11 has SIMD dot products for Q4_0, Q8_0 and the K-quants but runs Q4_1 through its
//! scalar `vec_dot_unopt`, which made Q4_1 models (SmolLM2's GGUF) ~13× slower per decode token
//! than llama.cpp. This is the same computation (activations quantized to Q8_1 blocks with f16
//! scales exactly as candle/ggml do it, then per block `d_w·d_x·Σ q_w·q_x + m_w·s_x`), with the
//! integer sums on AVX2 and output rows split over threads. [`q4_1_matmul_reference`] is the
//! scalar reference it is tested against.

use half::f16;
use rayon::prelude::*;

/// Values per block.
pub const QK: usize = 32;
/// Bytes of one Q4_1 block: f16 scale, f16 min, 16 bytes of nibbles.
pub const Q4_1_BLOCK_BYTES: usize = 20;

/// One activation block as ggml's `block_q8_1`: scale, scale·Σq, and the quantized values.
#[derive(Clone, Copy)]
struct Q8Block {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// ggml's `quantize_row_q8_1`, with the scale and the sum rounded through f16 as it stores them.
fn quantize_row(x: &[f32]) -> Vec<Q8Block> {
    x.chunks_exact(QK)
        .map(|xs| {
            let amax = xs.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let d16 = f16::from_f32(d);
            let mut qs = [0i8; QK];
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (v * id).round() as i8;
                sum += i32::from(*q);
            }
            Q8Block {
                d: d16.to_f32(),
                s: (f16::from_f32(sum as f32) * d16).to_f32(),
                qs,
            }
        })
        .collect()
}

fn block(w: &[u8]) -> (f32, f32, &[u8]) {
    let d = f16::from_le_bytes([w[0], w[1]]).to_f32();
    let m = f16::from_le_bytes([w[2], w[3]]).to_f32();
    (d, m, &w[4..20])
}

/// One output: a Q4_1 row against a quantized activation row, scalar.
fn dot_scalar(row: &[u8], x: &[Q8Block]) -> f32 {
    let mut sumf = 0f32;
    for (wb, xb) in row.chunks_exact(Q4_1_BLOCK_BYTES).zip(x) {
        let (d, m, qs) = block(wb);
        let mut sumi = 0i32;
        for (j, &q) in qs.iter().enumerate() {
            let (lo, hi) = (i32::from(q & 0x0F), i32::from(q >> 4));
            sumi += lo * i32::from(xb.qs[j]) + hi * i32::from(xb.qs[j + QK / 2]);
        }
        sumf += d * xb.d * sumi as f32 + m * xb.s;
    }
    sumf
}

/// `N` activation rows against one weight row: each weight block is unpacked once for all of
/// them (prefill and batched decode take rows in fours, the rest one by one); every output
/// gets the same arithmetic whatever `N` is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2<const N: usize>(row: &[u8], xs: [&[Q8Block]; N]) -> [f32; N] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_m = [0f32; N];
    let low_mask = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    for (b, wb) in row.chunks_exact(Q4_1_BLOCK_BYTES).enumerate() {
        let (d, m, qs) = block(wb);
        // SAFETY: `qs` is 16 bytes; each activation block holds 32.
        let packed = unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) };
        let lo = _mm_and_si128(packed, low_mask);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
        // Values 0..16 are the low nibbles, 16..32 the high ones: ggml's Q4_1 order.
        let w = _mm256_set_m128i(hi, lo);
        for r in 0..N {
            let xb = &xs[r][b];
            let xq = unsafe { _mm256_loadu_si256(xb.qs.as_ptr() as *const __m256i) };
            // Unsigned nibbles × signed int8 → pairs summed in i16 (at most 2·15·127).
            let prod32 = _mm256_madd_epi16(_mm256_maddubs_epi16(w, xq), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), _mm256_cvtepi32_ps(prod32), acc[r]);
            acc_m[r] += m * xb.s;
        }
    }
    let mut out = [0f32; N];
    for r in 0..N {
        let hi = _mm256_extractf128_ps(acc[r], 1);
        let s = _mm_add_ps(_mm256_castps256_ps128(acc[r]), hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        out[r] = _mm_cvtss_f32(s) + acc_m[r];
    }
    out
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn dot(row: &[u8], x: &[Q8Block], avx2: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the CPU has AVX2 and FMA (checked by the caller through `has_avx2`).
        return unsafe { dot_avx2(row, [x]) }[0];
    }
    let _ = avx2;
    dot_scalar(row, x)
}

/// Checks the operands' sizes: `x` is `[m, k]`, `w` holds `n` rows of `k / 32` Q4_1 blocks.
fn check(x: &[f32], m: usize, k: usize, w: &[u8], n: usize) -> Result<(), String> {
    if !k.is_multiple_of(QK) {
        return Err(format!("Q4_1 matmul: k = {k} is not a multiple of {QK}"));
    }
    if x.len() != m * k {
        return Err(format!(
            "Q4_1 matmul: x has {} values, not {m}×{k}",
            x.len()
        ));
    }
    if w.len() != n * (k / QK) * Q4_1_BLOCK_BYTES {
        return Err(format!(
            "Q4_1 matmul: weight has {} bytes, not {n} rows of {k} values",
            w.len()
        ));
    }
    Ok(())
}

fn matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
    avx2: bool,
) -> Result<Vec<f32>, String> {
    check(x, m, k, w, n)?;
    let xq: Vec<Vec<Q8Block>> = x.chunks_exact(k).map(quantize_row).collect();
    let row_bytes = k / QK * Q4_1_BLOCK_BYTES;
    // Threads take chunks of weight rows, each for every activation row: the weights are read
    // once per step whatever m is.
    const ROWS: usize = 16;
    let chunks: Vec<Vec<f32>> = w
        .par_chunks(row_bytes * ROWS)
        .map(|rows| {
            let r = rows.len() / row_bytes;
            let mut out = vec![0f32; m * r];
            for (j, row) in rows.chunks_exact(row_bytes).enumerate() {
                let mut i = 0;
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    while i + 4 <= m {
                        let xs = [&xq[i][..], &xq[i + 1][..], &xq[i + 2][..], &xq[i + 3][..]];
                        // SAFETY: the CPU has AVX2 and FMA (`avx2` comes from `has_avx2`).
                        let y4 = unsafe { dot_avx2(row, xs) };
                        for (t, v) in y4.into_iter().enumerate() {
                            out[(i + t) * r + j] = v;
                        }
                        i += 4;
                    }
                }
                for (t, xr) in xq.iter().enumerate().skip(i) {
                    out[t * r + j] = dot(row, xr, avx2);
                }
            }
            out
        })
        .collect();
    let mut y = vec![0f32; m * n];
    for (c, out) in chunks.iter().enumerate() {
        let r = out.len() / m.max(1);
        for i in 0..m {
            y[i * n + c * ROWS..i * n + c * ROWS + r].copy_from_slice(&out[i * r..(i + 1) * r]);
        }
    }
    Ok(y)
}

/// `[m, n]` = `x [m, k]` · `Wᵀ`, `w` the raw Q4_1 blocks of an `[n, k]` weight.
pub fn q4_1_matmul(x: &[f32], m: usize, k: usize, w: &[u8], n: usize) -> Result<Vec<f32>, String> {
    matmul(x, m, k, w, n, has_avx2())
}

/// The same with the scalar dot product only: the reference.
pub fn q4_1_matmul_reference(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[u8],
    n: usize,
) -> Result<Vec<f32>, String> {
    matmul(x, m, k, w, n, false)
}

/// Whether this CPU runs the SIMD path.
pub fn q4_1_simd_available() -> bool {
    has_avx2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

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
        let (m, k, n) = (5, 576, 37);
        let w = random_q4_1(n, k, 1);
        let mut s = 9;
        let x: Vec<f32> = (0..m * k)
            .map(|_| (lcg(&mut s) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let r = q4_1_matmul_reference(&x, m, k, &w, n).unwrap();
        let y = q4_1_matmul(&x, m, k, &w, n).unwrap();
        for (a, b) in y.iter().zip(&r) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
        // Rows in fours and the rest one by one give the same bits as each row alone.
        for i in 0..m {
            let alone = q4_1_matmul(&x[i * k..(i + 1) * k], 1, k, &w, n).unwrap();
            assert_eq!(&y[i * n..(i + 1) * n], &alone[..], "row {i}");
        }
        assert!(check(&x, m, k + 1, &w, n).is_err());
        assert!(check(&x, m, k, &w[1..], n).is_err());
    }

    #[test]
    fn reference_equals_dequantize_then_matmul_within_activation_quantization() {
        let (m, k, n) = (3, 64, 4);
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
        let mut s = 5;
        let x: Vec<f32> = (0..m * k)
            .map(|_| (lcg(&mut s) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let y = q4_1_matmul_reference(&x, m, k, &w, n).unwrap();
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
