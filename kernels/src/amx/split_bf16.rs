//! `y = x · Wᵀ` for f32 operands on AMX, each operand split into two bf16 parts:
//! `v ≈ hi + lo`, `hi = bf16(v)`, `lo = bf16(v − hi)` (about 16 of f32's 24 mantissa bits), and
//! `x·w ≈ x_hi·w_hi + x_lo·w_hi + x_hi·w_lo` (the dropped `x_lo·w_lo` is below 2⁻¹⁶ of the
//! product). Three bf16 tile products per f32 product, with f32 accumulation: results within
//! about 1e-5 of an f32 GEMM. all-MiniLM-L6-v2's worst cosine against sentence-transformers is
//! 0.9999992 this way; with plain bf16 (one product) it was 0.99994 and with two (no
//! `x_hi·w_lo`) 0.99997, too close to the 0.9999 its tests require.
//!
//! Weights are split and packed once, at load, into AMX's B-tile layout; activations are split
//! on every call. [`matmul_reference`] computes the same three products in f64 on scalars: the
//! reference the tiles are tested against.

use crate::disjoint::DisjointWrites;
use crate::elem::contiguous;
use crate::uninit::{assume_init, uninit};
use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use std::sync::Arc;

/// Values of `k` in one tile row (32 bf16 = 64 bytes), and outputs in one tile column block.
const TILE_K: usize = 32;
const TILE_N: usize = 16;
const TILE_M: usize = 16;
/// u16s in one packed B tile: 16 rows of k-pairs × 16 columns × 2.
const B_TILE: usize = TILE_K * TILE_N;

/// bf16 bits of `v`, rounded to nearest even (NaN stays NaN).
#[inline(always)]
fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    if v.is_nan() { 0x7fc0 } else { rounded }
}

#[inline(always)]
fn bf16_value(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `(hi, lo)` bf16 bits with `hi + lo ≈ v` to about 2⁻¹⁶ of `v`.
#[inline(always)]
pub fn split(v: f32) -> (u16, u16) {
    let hi = bf16_bits(v);
    (hi, bf16_bits(v - bf16_value(hi)))
}

/// An `[n, k]` f32 weight split into bf16 high and low parts, packed in AMX B tiles: for
/// output block `j` (16 rows of the weight) and k block `t` (32 columns), tile row `p` holds,
/// for each of the 16 outputs `c`, the pair `w[16j + c][32t + 2p .. 32t + 2p + 2]`. The tiles
/// one step of the matmul reads lie together, in the order it reads them: for each pair of
/// output blocks and each `t`, block `2·pair`'s high and low tiles, then block `2·pair + 1`'s
/// (4 KiB). Zero-padded to whole tiles and an even number of output blocks.
pub struct SplitBf16Weight {
    n: usize,
    k: usize,
    n_pairs: usize,
    k_tiles: usize,
    tiles: Vec<u16>,
}

impl std::fmt::Debug for SplitBf16Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SplitBf16Weight({}×{})", self.n, self.k)
    }
}

/// Where value `(row, col)` of a tiled operand lies: `row` along the 16 rows (activations) or
/// columns (weights) of a tile, `col` along k. `part` 0 is the high half, 1 the low.
#[inline(always)]
fn tile_at(tile: usize, row: usize, col_in_tile: usize, part: usize, weight: bool) -> usize {
    let within = if weight {
        (col_in_tile / 2) * 2 * TILE_N + row * 2 + col_in_tile % 2
    } else {
        row * TILE_K + col_in_tile
    };
    (tile * 2 + part) * B_TILE + within
}

impl SplitBf16Weight {
    /// Splits and packs `w`, `[n, k]` row-major.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Result<Self, String> {
        if w.len() != n * k {
            return Err(format!(
                "split-bf16 weight: {} values, not {n}×{k}",
                w.len()
            ));
        }
        let n_pairs = n.div_ceil(2 * TILE_N);
        let k_tiles = k.div_ceil(TILE_K);
        let mut tiles = vec![0u16; n_pairs * 2 * k_tiles * 2 * B_TILE];
        for row in 0..n {
            for (col, &v) in w[row * k..(row + 1) * k].iter().enumerate() {
                let (hi, lo) = split(v);
                tiles[Self::index(k_tiles, row, col, 0)] = hi;
                tiles[Self::index(k_tiles, row, col, 1)] = lo;
            }
        }
        Ok(Self {
            n,
            k,
            n_pairs,
            k_tiles,
            tiles,
        })
    }

    fn index(k_tiles: usize, row: usize, col: usize, part: usize) -> usize {
        let (j, c) = (row / TILE_N, row % TILE_N);
        let (pair, half) = (j / 2, j % 2);
        let tile = (pair * k_tiles + col / TILE_K) * 2 + half;
        tile_at(tile, c, col % TILE_K, part, true)
    }

    /// Output features (the weight's rows).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input features (the weight's columns).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held (both parts, padding included): the same as the f32 weight, up to padding.
    pub fn bytes(&self) -> usize {
        self.tiles.len() * 2
    }

    /// Weight `[row][col]`'s two parts.
    fn at(&self, row: usize, col: usize) -> (u16, u16) {
        let at = |part| self.tiles[Self::index(self.k_tiles, row, col, part)];
        (at(0), at(1))
    }
}

/// Activations `[m, k]` split into bf16 parts in A tiles: for row block `i` and k block `t`,
/// the high tile then the low (16 rows of 32 values each, 2 KiB), `t` after `t`. Zero-padded
/// to whole tiles.
struct SplitRows {
    tiles: Vec<u16>,
}

impl SplitRows {
    fn new(x: &[f32], m: usize, k: usize, k_tiles: usize) -> Self {
        let len = m.div_ceil(TILE_M) * k_tiles * 2 * B_TILE;
        // Not zero-filled (on a reused buffer that is a memset of all of it): every element,
        // padding included, is written below.
        let mut tiles = uninit::<u16>(len);
        let out = DisjointWrites::new(&mut tiles);
        let split_rows = |rows: std::ops::Range<usize>| {
            let (mut hi, mut lo) = ([0u16; TILE_K], [0u16; TILE_K]);
            for i in rows {
                let row = x.get(i * k..(i + 1) * k).unwrap_or(&[]);
                for t in 0..k_tiles {
                    let part = row.get(t * TILE_K..).unwrap_or(&[]);
                    split_run(&part[..part.len().min(TILE_K)], &mut hi, &mut lo);
                    let tile = (i / TILE_M) * k_tiles + t;
                    for (p, values) in [(0, &hi), (1, &lo)] {
                        let at = tile_at(tile, i % TILE_M, 0, p, false);
                        // SAFETY: in bounds (whole tiles); only this worker has row i.
                        let dst = unsafe { out.slice(at, TILE_K) };
                        for (d, &v) in dst.iter_mut().zip(values) {
                            d.write(v);
                        }
                    }
                }
            }
        };
        // Splitting is O(m·k) against the matmul's O(m·k·n), but it is not free: the rows go
        // to the pool and the loop is vectorised.
        let rows = m.div_ceil(TILE_M) * TILE_M;
        if m >= 64 {
            on_current_pool(rows, split_rows);
        } else {
            split_rows(0..rows);
        }
        // SAFETY: every element was written: each row of every tile, real or padding.
        Self {
            tiles: unsafe { assume_init(tiles) },
        }
    }
}

/// Runs `f` over `0..n` in ranges on the rayon pool the caller is in, a few ranges a thread.
/// The rayon pool, not candle's global barrier pool: the encoders run in a pool of their own
/// (its threads niced), and on the barrier pool their matmuls held the lock the chat
/// engine's matmuls wait on.
fn on_current_pool(n: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    use rayon::prelude::*;
    let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(1);
    (0..n.div_ceil(chunk))
        .into_par_iter()
        .for_each(|c| f(c * chunk..((c + 1) * chunk).min(n)));
}

/// Up to 32 values split into `hi` and `lo`, zeros past their end.
fn split_run(x: &[f32], hi: &mut [u16; TILE_K], lo: &mut [u16; TILE_K]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F.
        return unsafe { split_run_avx512(x, hi, lo) };
    }
    split_run_scalar(x, hi, lo)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn split_run_avx512(x: &[f32], hi: &mut [u16; TILE_K], lo: &mut [u16; TILE_K]) {
    split_run_scalar(x, hi, lo)
}

/// Written for the vectoriser: branch-free per element.
#[inline(always)]
fn split_run_scalar(x: &[f32], hi: &mut [u16; TILE_K], lo: &mut [u16; TILE_K]) {
    let mut padded = [0f32; TILE_K];
    padded[..x.len()].copy_from_slice(x);
    for ((v, h), l) in padded.iter().zip(hi.iter_mut()).zip(lo.iter_mut()) {
        (*h, *l) = split(*v);
    }
}

fn check(x: &[f32], m: usize, w: &SplitBf16Weight) -> Result<(), String> {
    if x.len() != m * w.k {
        return Err(format!(
            "split-bf16 matmul: x has {} values, not {m}×{}",
            x.len(),
            w.k
        ));
    }
    Ok(())
}

/// `[m, n]` = `x [m, k]` · `Wᵀ` on AMX tiles, on the caller's rayon pool.
pub fn matmul(x: &[f32], m: usize, w: &SplitBf16Weight) -> Result<Vec<f32>, String> {
    check(x, m, w)?;
    if !super::available() {
        return Err("split-bf16 matmul: AMX is not available in this process".into());
    }
    #[cfg(target_arch = "x86_64")]
    {
        Ok(tiles::matmul(x, m, w))
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("AMX is x86-64 only")
}

/// [`matmul`] as a candle op on `x` `[.., k]` (f32, CPU): the input is read in place.
#[derive(Debug, Clone)]
pub struct SplitBf16Matmul(pub Arc<SplitBf16Weight>);

impl CustomOp1 for SplitBf16Matmul {
    fn name(&self) -> &'static str {
        "split-bf16-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(values) = storage else {
            candle_core::bail!("split-bf16 matmul: the input must be f32");
        };
        let x = contiguous(values, layout, self.name())?;
        let Some((_, lead)) = layout.dims().split_last() else {
            candle_core::bail!("split-bf16 matmul: the input must have a feature dimension");
        };
        let m = lead.iter().product();
        let y = matmul(x, m, &self.0).map_err(candle_core::Error::Msg)?;
        let mut shape = lead.to_vec();
        shape.push(self.0.n);
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }
}

/// The same three products per term, summed in f64 on scalars: what the tiles compute, up to
/// their f32 accumulation order.
pub fn matmul_reference(x: &[f32], m: usize, w: &SplitBf16Weight) -> Result<Vec<f32>, String> {
    check(x, m, w)?;
    let (n, k) = (w.n, w.k);
    let mut y = vec![0f32; m * n];
    for i in 0..m {
        let xs: Vec<(f64, f64)> = x[i * k..(i + 1) * k]
            .iter()
            .map(|&v| {
                let (h, l) = split(v);
                (bf16_value(h) as f64, bf16_value(l) as f64)
            })
            .collect();
        for j in 0..n {
            let mut sum = 0f64;
            for (t, &(xh, xl)) in xs.iter().enumerate() {
                let (h, l) = w.at(j, t);
                let (wh, wl) = (bf16_value(h) as f64, bf16_value(l) as f64);
                sum += xh * wh + xl * wh + xh * wl;
            }
            y[i * n + j] = sum as f32;
        }
    }
    Ok(y)
}

#[cfg(target_arch = "x86_64")]
mod tiles {
    use super::super::tile::{self, dp};
    use super::*;

    /// Output pairs (of 16 columns each) whose weight tiles a run of items shares.
    const PAIRS_PER_CHUNK: usize = 4;

    /// One 16×16 f32 accumulator as stored.
    type Acc = [f32; TILE_M * TILE_N];

    pub(super) fn matmul(x: &[f32], m: usize, w: &SplitBf16Weight) -> Vec<f32> {
        let a = SplitRows::new(x, m, w.k, w.k_tiles);
        let n = w.n;
        let mut y = uninit::<f32>(m * n);
        let out = DisjointWrites::new(&mut y);
        let m_tiles = m.div_ceil(TILE_M);
        let m_units = m_tiles.div_ceil(2);
        let n_pairs = w.n_pairs;
        // One item: 32 activation rows (16 for an odd last block) against 32 outputs, four
        // accumulators. Items go through the outputs `PAIRS_PER_CHUNK` pairs at a time, for
        // every row block: a chunk's weight tiles (128 × k × 4 bytes, ≤ 0.8 MB) stay in L2
        // while the row blocks pass.
        let chunk_items = m_units * PAIRS_PER_CHUNK;
        let place = |item: usize| {
            let chunk = item / chunk_items;
            let first_pair = chunk * PAIRS_PER_CHUNK;
            let pairs_here = PAIRS_PER_CHUNK.min(n_pairs - first_pair);
            let rest = item - chunk * chunk_items;
            (rest / pairs_here, first_pair + rest % pairs_here)
        };
        let items = |range: std::ops::Range<usize>| {
            // SAFETY: AMX is available (checked by the caller); this thread configures its
            // tiles before its first tile instruction and releases them after the last.
            unsafe { tile::configure_full() };
            let mut acc: [Acc; 4] = [[0f32; TILE_M * TILE_N]; 4];
            for item in range {
                let (unit, pair) = place(item);
                let it = 2 * unit;
                let both_rows = it + 1 < m_tiles;
                // SAFETY: as above; the row blocks and `pair` index whole tiles of `a` and `w`.
                unsafe {
                    if both_rows {
                        block_2x2(&a, w, it, pair, &mut acc);
                    } else {
                        block_1x2(&a, w, it, pair, &mut acc);
                    }
                }
                for (i, acc) in acc.iter().enumerate().take(if both_rows { 4 } else { 2 }) {
                    let (it, half) = (it + i / 2, i % 2);
                    let col0 = (2 * pair + half) * TILE_N;
                    if col0 >= n {
                        continue; // the padding block of an odd count
                    }
                    let width = TILE_N.min(n - col0);
                    for r in 0..TILE_M.min(m - it * TILE_M) {
                        let row = it * TILE_M + r;
                        // SAFETY: in bounds; only this item has these rows' columns
                        // col0..col0 + width.
                        let dst = unsafe { out.slice(row * n + col0, width) };
                        for (d, &v) in dst.iter_mut().zip(&acc[r * TILE_N..r * TILE_N + width]) {
                            d.write(v);
                        }
                    }
                }
            }
            // SAFETY: as above.
            unsafe { tile::release() };
        };
        on_current_pool(m_units * n_pairs, items);
        // SAFETY: the items cover every (row, column): each row block against every pair.
        unsafe { assume_init(y) }
    }

    /// Row blocks `it` and `it + 1` of `a` against output pair `pair`: `acc` in the order
    /// (it, 2·pair), (it, 2·pair + 1), (it + 1, 2·pair), (it + 1, 2·pair + 1).
    ///
    /// A tile load costs about three tile products on the CPUs measured (16 ns against 5 ns,
    /// from L1 or L2 alike), so the loop is arranged for the fewest loads a product: four
    /// accumulators share every loaded tile, and the three products of a step take ten loads
    /// for twelve products (the 16-row kernel below takes six for six).
    ///
    /// # Safety
    /// Tiles are configured on this thread; `it`, `it + 1` and `pair` index whole tiles of `a`
    /// and `w`.
    #[inline(always)]
    unsafe fn block_2x2(
        a: &SplitRows,
        w: &SplitBf16Weight,
        it: usize,
        pair: usize,
        acc: &mut [Acc; 4],
    ) {
        const STRIDE: usize = tile::ROW_BYTES;
        let kt = w.k_tiles;
        unsafe {
            let mut x0 = a.tiles.as_ptr().add(it * kt * 2 * B_TILE);
            let mut x1 = x0.add(kt * 2 * B_TILE);
            let mut b = w.tiles.as_ptr().add(pair * kt * 4 * B_TILE);
            tile::zero0();
            tile::zero1();
            tile::zero2();
            tile::zero3();
            macro_rules! four {
                () => {
                    dp!("tmm0", "tmm4", "tmm6");
                    dp!("tmm1", "tmm4", "tmm7");
                    dp!("tmm2", "tmm5", "tmm6");
                    dp!("tmm3", "tmm5", "tmm7");
                };
            }
            for _ in 0..kt {
                // x_hi · w_hi
                tile::load4(x0.cast(), STRIDE);
                tile::load5(x1.cast(), STRIDE);
                tile::load6(b.cast(), STRIDE);
                tile::load7(b.add(2 * B_TILE).cast(), STRIDE);
                four!();
                // x_hi · w_lo
                tile::load6(b.add(B_TILE).cast(), STRIDE);
                tile::load7(b.add(3 * B_TILE).cast(), STRIDE);
                four!();
                // x_lo · w_hi
                tile::load4(x0.add(B_TILE).cast(), STRIDE);
                tile::load5(x1.add(B_TILE).cast(), STRIDE);
                tile::load6(b.cast(), STRIDE);
                tile::load7(b.add(2 * B_TILE).cast(), STRIDE);
                four!();
                x0 = x0.add(2 * B_TILE);
                x1 = x1.add(2 * B_TILE);
                b = b.add(4 * B_TILE);
            }
            let [a0, a1, a2, a3] = acc;
            tile::store0(a0.as_mut_ptr().cast(), TILE_N * 4);
            tile::store1(a1.as_mut_ptr().cast(), TILE_N * 4);
            tile::store2(a2.as_mut_ptr().cast(), TILE_N * 4);
            tile::store3(a3.as_mut_ptr().cast(), TILE_N * 4);
        }
    }

    /// Row block `it` of `a` against output pair `pair`: `acc[0]` and `acc[1]`.
    ///
    /// # Safety
    /// Tiles are configured on this thread; `it` and `pair` index whole tiles of `a` and `w`.
    #[inline(always)]
    unsafe fn block_1x2(
        a: &SplitRows,
        w: &SplitBf16Weight,
        it: usize,
        pair: usize,
        acc: &mut [Acc; 4],
    ) {
        const STRIDE: usize = tile::ROW_BYTES;
        let kt = w.k_tiles;
        unsafe {
            // Step t reads 2 KiB of activations and 4 KiB of weights, each contiguous.
            let mut x = a.tiles.as_ptr().add(it * kt * 2 * B_TILE);
            let mut b = w.tiles.as_ptr().add(pair * kt * 4 * B_TILE);
            tile::zero0();
            tile::zero1();
            for _ in 0..kt {
                tile::load2(x.cast(), STRIDE);
                tile::load3(x.add(B_TILE).cast(), STRIDE);
                tile::load4(b.cast(), STRIDE);
                tile::load5(b.add(B_TILE).cast(), STRIDE);
                // The 32-row kernel's order (hi·hi, hi·lo, lo·hi): a row's result must not
                // depend on which kernel its block went through.
                dp!("tmm0", "tmm2", "tmm4");
                dp!("tmm0", "tmm2", "tmm5");
                dp!("tmm0", "tmm3", "tmm4");
                tile::load6(b.add(2 * B_TILE).cast(), STRIDE);
                tile::load7(b.add(3 * B_TILE).cast(), STRIDE);
                dp!("tmm1", "tmm2", "tmm6");
                dp!("tmm1", "tmm2", "tmm7");
                dp!("tmm1", "tmm3", "tmm6");
                x = x.add(2 * B_TILE);
                b = b.add(4 * B_TILE);
            }
            tile::store0(acc[0].as_mut_ptr().cast(), TILE_N * 4);
            tile::store1(acc[1].as_mut_ptr().cast(), TILE_N * 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn split_parts_sum_to_the_value_within_2_pow_minus_16() {
        for v in values(10_000, 3)
            .into_iter()
            .chain([0.0, -0.0, 1e-30, 3.0e38, 1.0])
        {
            let (h, l) = split(v);
            let back = bf16_value(h) + bf16_value(l);
            assert!((back - v).abs() <= v.abs() * 2f32.powi(-16), "{v} → {back}");
        }
        assert!(bf16_value(split(f32::NAN).0).is_nan());
        // Round to nearest even at the halfway point.
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
    }

    /// Sizes with partial tiles in every dimension.
    const SHAPES: [(usize, usize, usize); 4] =
        [(1, 40, 17), (17, 64, 48), (33, 100, 35), (64, 384, 96)];

    #[test]
    fn the_reference_is_an_f32_matmul_within_2_pow_minus_15() {
        for (m, k, n) in SHAPES {
            let (x, wv) = (values(m * k, 1), values(n * k, 2));
            let w = SplitBf16Weight::pack(&wv, n, k).unwrap();
            let y = matmul_reference(&x, m, &w).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k).map(|t| x[i * k + t] as f64 * wv[j * k + t] as f64);
                    let exact: f64 = terms.clone().sum();
                    let scale: f64 = terms.map(f64::abs).sum();
                    let err = (y[i * n + j] as f64 - exact).abs();
                    assert!(
                        err <= scale * 2f64.powi(-15),
                        "({i},{j}) {} vs {exact}",
                        y[i * n + j]
                    );
                }
            }
        }
        assert!(SplitBf16Weight::pack(&[0.0; 5], 2, 3).is_err());
        let w = SplitBf16Weight::pack(&[0.0; 6], 2, 3).unwrap();
        assert!(matmul_reference(&[0.0; 4], 1, &w).is_err());
    }

    #[test]
    fn a_row_gives_the_same_bits_in_any_batch() {
        if !super::super::available() {
            eprintln!("no AMX in this process: the tiles are not checked here");
            return;
        }
        let (k, n) = (96, 64);
        let w = SplitBf16Weight::pack(&values(n * k, 7), n, k).unwrap();
        let x = values(50 * k, 8);
        let all = matmul(&x, 50, &w).unwrap();
        // 50 rows: blocks of 32 (the 2×2 kernel) and an odd last block (1×2); alone, every
        // row goes through the 1×2 kernel.
        for i in 0..50 {
            let alone = matmul(&x[i * k..(i + 1) * k], 1, &w).unwrap();
            assert_eq!(&all[i * n..(i + 1) * n], &alone[..], "row {i}");
        }
    }

    #[test]
    fn the_tiles_compute_the_reference() {
        if !super::super::available() {
            eprintln!("no AMX in this process: the tiles are not checked here");
            return;
        }
        for (m, k, n) in SHAPES.into_iter().chain([(300, 1536, 384)]) {
            let (x, wv) = (values(m * k, 4), values(n * k, 5));
            let w = SplitBf16Weight::pack(&wv, n, k).unwrap();
            let r = matmul_reference(&x, m, &w).unwrap();
            let y = matmul(&x, m, &w).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let scale: f32 = (0..k).map(|t| (x[i * k + t] * wv[j * k + t]).abs()).sum();
                    let (a, b) = (y[i * n + j], r[i * n + j]);
                    // f32 accumulation of k terms, in the tiles' order.
                    assert!(
                        (a - b).abs() <= scale * 1e-5,
                        "({i},{j}) of {m}×{k}×{n}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
