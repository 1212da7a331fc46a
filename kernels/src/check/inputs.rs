//! The CPU side of the GPU check (`indus-gpu-check`, scripts/gpu-check.sh): deterministic random inputs, paged
//! attention cases with poisoned cache slots, error metrics and tolerances, byte counts for bandwidth figures.
//! Everything here runs without a GPU and is unit-tested in CI; the binary only moves these inputs to the device,
//! runs each op there and on the CPU reference, and compares.

use crate::metadata::HostAttentionMetadata;
use candle_core::DType;

/// SplitMix64: small, seedable, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}

/// Relative L2 error `|got - want| / |want|` (absolute when `want` is all zeros). Any non-finite `got` where
/// `want` is finite gives infinity, so poisoned values that leak into an output fail every tolerance.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_l2: lengths differ");
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        if w.is_finite() && !g.is_finite() {
            return f64::INFINITY;
        }
        let d = g as f64 - w as f64;
        num += d * d;
        den += w as f64 * w as f64;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs())
        .fold(
            0.0,
            |a: f64, d| if d.is_nan() { f64::INFINITY } else { a.max(d) },
        )
}

/// Bitwise-style equality that treats NaN == NaN (cache writes are copies: they must match exactly, and the
/// poisoned slots they must not touch stay NaN).
pub fn mismatches_exact(got: &[f32], want: &[f32]) -> usize {
    got.iter()
        .zip(want)
        .filter(|(g, w)| !(g == w || (g.is_nan() && w.is_nan())))
        .count()
}

/// Tolerance on the relative L2 error of a kernel against its CPU reference.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-4,
        _ => 1e-2,
    }
}

/// One sequence of a paged attention case: `context_len` tokens in the cache after this step, of which the last
/// `q_len` are this step's queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpec {
    pub context_len: usize,
    pub q_len: usize,
}

impl SeqSpec {
    pub fn decode(context_len: usize) -> Self {
        Self {
            context_len,
            q_len: 1,
        }
    }
    pub fn prefill(len: usize) -> Self {
        Self {
            context_len: len,
            q_len: len,
        }
    }
    pub fn chunk(context_len: usize, q_len: usize) -> Self {
        Self { context_len, q_len }
    }
}

/// A paged attention problem: metadata with shuffled block ids and the cache slots no sequence may read.
#[derive(Debug, Clone)]
pub struct AttentionCase {
    pub meta: HostAttentionMetadata,
    pub num_blocks: usize,
    pub block_size: usize,
    /// Slots (block * block_size + offset) outside every sequence's context: fill them with NaN, so any read
    /// past a context, through a padded block-table entry or of a stale slot poisons the output.
    pub poisoned_slots: Vec<usize>,
    /// The block every padded block-table entry points to (itself poisoned entirely).
    pub poison_block: usize,
}

impl AttentionCase {
    /// Blocks are handed out in a random order (plus `spare_blocks` never used) so that logical and physical
    /// order differ; the last block id is the all-poison padding target.
    pub fn new(seqs: &[SeqSpec], block_size: usize, spare_blocks: usize, rng: &mut Rng) -> Self {
        assert!(block_size > 0);
        let per_seq: Vec<usize> = seqs
            .iter()
            .map(|s| s.context_len.div_ceil(block_size))
            .collect();
        let used: usize = per_seq.iter().sum();
        let num_blocks = used + spare_blocks + 1;
        let poison_block = num_blocks - 1;
        let mut ids: Vec<usize> = (0..num_blocks - 1).collect();
        rng.shuffle(&mut ids);
        let max_blocks = per_seq.iter().copied().max().unwrap_or(0).max(1) + 1;
        let mut block_tables = vec![poison_block as u32; seqs.len() * max_blocks];
        let mut valid = vec![false; num_blocks * block_size];
        let mut slot_mapping = Vec::new();
        let mut query_start_loc = vec![0u32];
        let mut next = 0;
        for (s, spec) in seqs.iter().enumerate() {
            assert!(spec.q_len <= spec.context_len, "q_len > context_len");
            for b in 0..per_seq[s] {
                block_tables[s * max_blocks + b] = ids[next] as u32;
                next += 1;
            }
            for pos in 0..spec.context_len {
                let slot = block_tables[s * max_blocks + pos / block_size] as usize * block_size
                    + pos % block_size;
                valid[slot] = true;
                if pos >= spec.context_len - spec.q_len {
                    slot_mapping.push(slot as i64);
                }
            }
            query_start_loc.push(query_start_loc[s] + spec.q_len as u32);
        }
        let poisoned_slots = (0..valid.len()).filter(|&i| !valid[i]).collect();
        Self {
            meta: HostAttentionMetadata {
                slot_mapping,
                block_tables,
                max_blocks_per_seq: max_blocks,
                context_lens: seqs.iter().map(|s| s.context_len as u32).collect(),
                query_start_loc,
            },
            num_blocks,
            block_size,
            poisoned_slots,
            poison_block,
        }
    }

    /// A random cache `[num_blocks, kv_heads, block_size, head_size]` with every poisoned slot set to NaN.
    pub fn cache(&self, num_kv_heads: usize, head_size: usize, rng: &mut Rng) -> Vec<f32> {
        let mut c = rng.normals(
            self.num_blocks * num_kv_heads * self.block_size * head_size,
            1.0,
        );
        for &slot in &self.poisoned_slots {
            let (b, o) = (slot / self.block_size, slot % self.block_size);
            for h in 0..num_kv_heads {
                let base = ((b * num_kv_heads + h) * self.block_size + o) * head_size;
                c[base..base + head_size].fill(f32::NAN);
            }
        }
        c
    }
}

/// Bytes a decode attention step must read at least: every context token's K and V rows for every KV head, plus
/// q and the output.
pub fn decode_attention_bytes(
    context_lens: &[usize],
    num_heads: usize,
    num_kv_heads: usize,
    head_size: usize,
    elem: usize,
) -> usize {
    let kv: usize = context_lens.iter().sum::<usize>() * num_kv_heads * head_size * 2 * elem;
    kv + 2 * context_lens.len() * num_heads * head_size * elem
}

/// Matmul FLOPs of causal prefill attention (Q·Kᵀ and P·V over the visible keys only).
pub fn prefill_attention_flops(seqs: &[SeqSpec], num_heads: usize, head_size: usize) -> f64 {
    seqs.iter()
        .map(|s| {
            let first = s.context_len - s.q_len;
            let visible: usize = (0..s.q_len).map(|j| first + j + 1).sum();
            4.0 * visible as f64 * head_size as f64 * num_heads as f64
        })
        .sum()
}

/// One line of the check's report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub dtype: DType,
    pub detail: String,
    /// Relative L2 error (or mismatch count for exact checks).
    pub error: f64,
    pub tolerance: f64,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance
    }
}

/// Markdown table of results, failures first.
pub fn results_table(results: &[CheckResult]) -> String {
    let mut rows: Vec<&CheckResult> = results.iter().collect();
    rows.sort_by_key(|r| r.passed());
    let mut s = String::from(
        "| check | dtype | case | error | tolerance | result |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:?} | {} | {:.2e} | {:.0e} | {} |\n",
            r.name,
            r.dtype,
            r.detail,
            r.error,
            r.tolerance,
            if r.passed() { "ok" } else { "FAIL" }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_normal() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut r = Rng::new(1);
        let xs = r.normals(20_000, 1.0);
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / xs.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.uniform())));
    }

    #[test]
    fn metrics_catch_poison() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((rel_l2(&[1.1, 2.0], &[1.0, 2.0]) - 0.1 / 5f64.sqrt()).abs() < 1e-7);
        assert_eq!(rel_l2(&[f32::NAN, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(
            mismatches_exact(&[f32::NAN, 1.0, 2.0], &[f32::NAN, 1.0, 3.0]),
            1
        );
        assert_eq!(tolerance(DType::BF16), 1e-2);
        assert_eq!(tolerance(DType::F32), 1e-4);
    }

    #[test]
    fn attention_case_is_valid_and_poisons_the_rest() {
        let mut rng = Rng::new(3);
        let seqs = [
            SeqSpec::decode(17),
            SeqSpec::prefill(1),
            SeqSpec::chunk(40, 8),
            SeqSpec::prefill(16),
        ];
        let case = AttentionCase::new(&seqs, 16, 3, &mut rng);
        let m = &case.meta;
        m.validate(16).unwrap();
        assert_eq!(m.num_tokens(), 1 + 1 + 8 + 16);
        assert_eq!(m.query_start_loc, vec![0, 1, 2, 10, 26]);
        // Blocks: 2 + 1 + 3 + 1 used, 3 spare, 1 poison.
        assert_eq!(case.num_blocks, 11);
        // Every slot a query writes is in its sequence's blocks and not poisoned.
        for &slot in &m.slot_mapping {
            assert!(!case.poisoned_slots.contains(&(slot as usize)));
        }
        // Used slots = sum of contexts; the rest are poisoned.
        assert_eq!(
            case.poisoned_slots.len(),
            case.num_blocks * 16 - (17 + 1 + 40 + 16)
        );
        // Padding entries point to the poison block.
        assert_eq!(m.block_table(1)[1], case.poison_block as u32);
        let cache = case.cache(2, 8, &mut rng);
        let nan_rows = cache.chunks(8).filter(|r| r[0].is_nan()).count();
        assert_eq!(nan_rows, case.poisoned_slots.len() * 2);
    }

    #[test]
    fn byte_and_flop_counts() {
        // Llama-3-8B decode, batch 64 x 4096: 1 GiB of K and V per layer.
        let b = decode_attention_bytes(&[4096; 64], 32, 8, 128, 2);
        assert_eq!(b, 64 * 4096 * 8 * 128 * 2 * 2 + 2 * 64 * 32 * 128 * 2);
        let f = prefill_attention_flops(&[SeqSpec::prefill(2)], 1, 1);
        assert_eq!(f, 4.0 * 3.0);
    }

    #[test]
    fn table_lists_failures_first() {
        let r = |e| CheckResult {
            name: "x".into(),
            dtype: DType::F32,
            detail: "d".into(),
            error: e,
            tolerance: 1e-4,
        };
        let t = results_table(&[r(0.0), r(1.0)]);
        let fail = t.find("FAIL").unwrap();
        let ok = t.find("| ok |").unwrap();
        assert!(fail < ok);
    }
}
