//! Inputs of the GPU check: paged attention cases with poisoned cache slots, inputs that provoke the bugs a careful
//! reading could not rule out (scores large enough to overflow a softmax without max subtraction, one dominant
//! key, RMSNorm rows small enough that a dropped eps matters), and sampling rows with ties, infinities, NaNs and
//! extreme parameters. All deterministic from a seed, all usable on CPU.

use super::metrics::Rng;
use crate::metadata::HostAttentionMetadata;
use crate::sampling::SamplingRow;

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

    /// The cache slot of position `pos` of sequence `seq`.
    pub fn slot(&self, seq: usize, pos: usize) -> usize {
        self.meta.block_table(seq)[pos / self.block_size] as usize * self.block_size
            + pos % self.block_size
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

/// How the attention scores of a case are distributed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreRegime {
    /// q, K and V standard normal: scores of standard deviation about 1.
    Random,
    /// q scaled by this factor: scores of that standard deviation, so the largest score of a row of a few dozen keys
    /// or more is far above 88.7 -- where `exp` overflows f32 without the max subtracted.
    ScaledQ(f32),
    /// Every query token has one key scoring [`DOMINANT_SCORE`] (the rest score ~N(0, 10^2)): the softmax is one-hot,
    /// overflows without max subtraction, and a kernel that skips or misplaces that one key is off by ~100 %. Decode
    /// tokens' dominant keys sit, by sequence, at the newest position, at position 0, on a block or split-K partition
    /// boundary, or anywhere; prompt tokens' at their own position (the diagonal).
    DominantKey,
}

/// The score of the dominant key in [`ScoreRegime::DominantKey`].
pub const DOMINANT_SCORE: f32 = 120.0;
/// Scale of the query direction in [`ScoreRegime::DominantKey`]: other keys score ~N(0, DELTA^2).
const DOMINANT_DELTA: f32 = 10.0;

/// A paged attention problem with its inputs (q `[tokens, heads, hs]`, K and V caches, host f32 values).
#[derive(Debug, Clone)]
pub struct AttentionInputs {
    pub case: AttentionCase,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub heads: usize,
    pub kvh: usize,
    pub hs: usize,
    pub scale: f32,
    pub regime: ScoreRegime,
    /// Per query token, the position of its dominant key ([`ScoreRegime::DominantKey`] only).
    pub dominant: Vec<Option<usize>>,
}

impl AttentionInputs {
    pub fn new(
        seqs: &[SeqSpec],
        block_size: usize,
        (heads, kvh, hs): (usize, usize, usize),
        regime: ScoreRegime,
        rng: &mut Rng,
    ) -> Self {
        let case = AttentionCase::new(seqs, block_size, 2, rng);
        let tokens = case.meta.num_tokens();
        let scale = 1.0 / (hs as f32).sqrt();
        let mut q = rng.normals(tokens * heads * hs, 1.0);
        let mut k = case.cache(kvh, hs, rng);
        let v = case.cache(kvh, hs, rng);
        let mut dominant = vec![None; tokens];
        match regime {
            ScoreRegime::Random => {}
            ScoreRegime::ScaledQ(f) => q.iter_mut().for_each(|x| *x *= f),
            ScoreRegime::DominantKey => {
                let gamma = DOMINANT_SCORE / (DOMINANT_DELTA * hs as f32 * scale);
                for (s, spec) in seqs.iter().enumerate() {
                    let first = spec.context_len - spec.q_len;
                    for j in 0..spec.q_len {
                        let t = case.meta.query_start_loc[s] as usize + j;
                        let pos = if spec.q_len > 1 {
                            first + j
                        } else {
                            let ctx = spec.context_len;
                            match s % 4 {
                                0 => ctx - 1,
                                1 => 0,
                                2 if ctx > 512 => 512,
                                2 => (ctx - 1) / block_size * block_size,
                                _ => rng.below(ctx),
                            }
                        };
                        dominant[t] = Some(pos);
                        let u: Vec<f32> = (0..hs)
                            .map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 })
                            .collect();
                        for h in 0..heads {
                            let row = &mut q[(t * heads + h) * hs..][..hs];
                            for (x, &ui) in row.iter_mut().zip(&u) {
                                *x += DOMINANT_DELTA * ui;
                            }
                        }
                        let slot = case.slot(s, pos);
                        let (b, o) = (slot / block_size, slot % block_size);
                        for h in 0..kvh {
                            let base = ((b * kvh + h) * block_size + o) * hs;
                            for (x, &ui) in k[base..base + hs].iter_mut().zip(&u) {
                                *x = gamma * ui;
                            }
                        }
                    }
                }
            }
        }
        Self {
            case,
            q,
            k,
            v,
            heads,
            kvh,
            hs,
            scale,
            regime,
            dominant,
        }
    }

    /// Dims of the K and V caches.
    pub fn cache_dims(&self) -> [usize; 4] {
        [
            self.case.num_blocks,
            self.kvh,
            self.case.block_size,
            self.hs,
        ]
    }

    pub fn q_dims(&self) -> [usize; 3] {
        [self.case.meta.num_tokens(), self.heads, self.hs]
    }
}

/// RMSNorm rows whose magnitude cycles through these scales: at 1e-2 and below, `mean(x^2)` is within a factor of
/// ten of an eps of 1e-5 or 1e-6, so a kernel that drops or misreads eps is off by 5 % to 100 % on those rows.
pub const NORM_ROW_SCALES: [f32; 6] = [1.0, 1e-2, 3e-3, 1e-3, 3e-4, 10.0];

/// `rows x dim` values, row `r` scaled by `NORM_ROW_SCALES[r % 6]`.
pub fn norm_rows(rows: usize, dim: usize, rng: &mut Rng) -> Vec<f32> {
    let mut x = rng.normals(rows * dim, 1.0);
    for (r, row) in x.chunks_mut(dim.max(1)).enumerate() {
        let s = NORM_ROW_SCALES[r % NORM_ROW_SCALES.len()];
        row.iter_mut().for_each(|v| *v *= s);
    }
    x
}

// ---------------------------------------------------------------------------------------------- sampling

/// The shape of one row of logits in the sampling check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitPattern {
    /// ~N(0, 3^2).
    Normal,
    /// Rounded to halves: many exact ties, at the top too.
    Ties,
    /// 30 % -inf.
    SomeNegInf,
    /// 10 % NaN (sampled as -inf).
    SomeNan,
    /// Every logit 0.
    AllEqual,
    /// One +inf among normal logits.
    PosInf,
    /// -inf everywhere but one logit.
    OneFinite,
    /// NaN everywhere.
    AllNan,
    /// -inf everywhere.
    AllNegInf,
    /// ~N(0, 300^2): weights underflow to 0 for all but a few.
    Huge,
}

pub const LOGIT_PATTERNS: [LogitPattern; 10] = [
    LogitPattern::Normal,
    LogitPattern::Ties,
    LogitPattern::SomeNegInf,
    LogitPattern::SomeNan,
    LogitPattern::AllEqual,
    LogitPattern::PosInf,
    LogitPattern::OneFinite,
    LogitPattern::AllNan,
    LogitPattern::AllNegInf,
    LogitPattern::Huge,
];

/// Fills one row of logits with `pattern`.
pub fn fill_logits(pattern: LogitPattern, rng: &mut Rng, row: &mut [f32]) {
    use LogitPattern as P;
    let n = row.len();
    for x in row.iter_mut() {
        *x = match pattern {
            P::Normal | P::SomeNegInf | P::SomeNan | P::PosInf => rng.approx_normal() * 3.0,
            P::Ties => (rng.approx_normal() * 4.0).round() * 0.5,
            P::AllEqual => 0.0,
            P::OneFinite | P::AllNegInf => f32::NEG_INFINITY,
            P::AllNan => f32::NAN,
            P::Huge => rng.approx_normal() * 300.0,
        };
        let u = rng.next_u64() % 10;
        if pattern == P::SomeNegInf && u < 3 {
            *x = f32::NEG_INFINITY;
        }
        if pattern == P::SomeNan && u < 1 {
            *x = f32::NAN;
        }
    }
    if n > 0 {
        match pattern {
            P::PosInf => row[rng.below(n)] = f32::INFINITY,
            P::OneFinite => row[rng.below(n)] = rng.normal(),
            _ => {}
        }
    }
}

/// The largest f32 below 1: a uniform draw at the very end of the CDF.
pub const UNIFORM_NEAR_ONE: f32 = 1.0 - f32::EPSILON / 2.0;

/// Number of parameter sets of [`hostile_params`].
pub const HOSTILE_PARAM_SETS: usize = 20;

/// The `i`-th (mod [`HOSTILE_PARAM_SETS`]) parameter set of the hostile sampling mix: greedy and NaN temperature,
/// top_k of 1, of the vocabulary and beyond it, top_p of 0 and 1e-6, min_p near 1, temperatures from 1e-5 to 100,
/// draws of 0 and just below 1, and combinations.
pub fn hostile_params(i: usize, vocab: usize, rng: &mut Rng) -> SamplingRow {
    let u = rng.uniform();
    let r = |temperature: f32, top_k: u32, top_p: f32, min_p: f32, uniform: f32| SamplingRow {
        temperature,
        top_k,
        top_p,
        min_p,
        uniform,
    };
    let v = vocab as u32;
    match i % HOSTILE_PARAM_SETS {
        0 => SamplingRow::greedy(),
        1 => r(1.0, 0, 1.0, 0.0, u),
        2 => r(0.7, 50, 1.0, 0.0, u),
        3 => r(1.0, v, 1.0, 0.0, u),
        4 => r(1.0, v.saturating_add(7), 1.0, 0.0, u),
        5 => r(1.0, 1, 1.0, 0.0, u),
        6 => r(1.0, 0, 1e-6, 0.0, u),
        7 => r(1.0, 0, 0.0, 0.0, u),
        8 => r(0.9, 0, 0.9, 0.0, u),
        9 => r(1.2, 0, 1.0, 0.05, u),
        10 => r(1.0, 0, 1.0, 0.99, u),
        11 => r(1e-4, 0, 1.0, 0.0, u),
        12 => r(100.0, 0, 1.0, 0.0, u),
        13 => r(0.8, 40, 0.95, 0.02, u),
        14 => r(1.0, 0, 1.0, 0.0, UNIFORM_NEAR_ONE),
        15 => r(1.0, 0, 0.5, 0.0, UNIFORM_NEAR_ONE),
        16 => r(1e-5, 0, 1.0, 0.0, u),
        17 => r(1.0, 0, 1.0, 0.0, 0.0),
        18 => r(1.0, 2, 0.3, 0.5, UNIFORM_NEAR_ONE),
        _ => r(f32::NAN, 0, 1.0, 0.0, u),
    }
}

/// What a batch of sampling rows looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingKind {
    /// Temperature 1, no filters, normal logits: the case where two different exps flip the most draws.
    Temperature1,
    /// Every [`LogitPattern`] with every [`hostile_params`] set.
    Hostile,
    /// Every [`LogitPattern`], no parameters (`sampling::argmax`).
    Greedy,
}

/// Rows `first..first + n` of a sampling run (`[n, vocab]` logits and their parameters; parameters are empty for
/// [`SamplingKind::Greedy`]). Each row depends only on `(seed, row index)`, so a run can be generated in pieces and
/// on several threads.
pub fn sampling_rows(
    kind: SamplingKind,
    first: usize,
    n: usize,
    vocab: usize,
    seed: u64,
) -> (Vec<f32>, Vec<SamplingRow>) {
    let mut logits = vec![0f32; n * vocab];
    let mut params = Vec::with_capacity(n);
    let row_rng = |row: usize| {
        Rng::new(seed ^ (row as u64).wrapping_mul(0xD134_2543_DE82_EF95) ^ (kind as u64) << 60)
    };
    let pattern_of = |row: usize| match kind {
        SamplingKind::Temperature1 => LogitPattern::Normal,
        _ => LOGIT_PATTERNS[row % LOGIT_PATTERNS.len()],
    };
    // Logits on all cores (billions of them in a full run); parameters are cheap.
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(64);
    let rows_per = n.div_ceil(threads).max(1);
    if vocab > 0 {
        std::thread::scope(|sc| {
            for (c, chunk) in logits.chunks_mut(rows_per * vocab).enumerate() {
                sc.spawn(move || {
                    for (i, row) in chunk.chunks_mut(vocab).enumerate() {
                        let r = first + c * rows_per + i;
                        fill_logits(pattern_of(r), &mut row_rng(r), row);
                    }
                });
            }
        });
    }
    for r in first..first + n {
        let mut rng = row_rng(r);
        rng.next_u64();
        match kind {
            SamplingKind::Temperature1 => params.push(SamplingRow {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                min_p: 0.0,
                uniform: rng.uniform(),
            }),
            SamplingKind::Hostile => {
                let set = (r / LOGIT_PATTERNS.len()) % HOSTILE_PARAM_SETS;
                params.push(hostile_params(set, vocab, &mut rng));
            }
            SamplingKind::Greedy => {}
        }
    }
    (logits, params)
}

/// [`crate::sampling::sample_reference`] on all cores, row blocks in parallel (the same result, row for row).
pub fn sample_reference_parallel(
    logits: &[f32],
    vocab: usize,
    rows: Option<&[SamplingRow]>,
) -> Vec<u32> {
    if vocab == 0 {
        return Vec::new();
    }
    let n = logits.len() / vocab;
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(64);
    let per = n.div_ceil(threads).max(1);
    let mut out = vec![0u32; n];
    std::thread::scope(|sc| {
        for (c, dst) in out.chunks_mut(per).enumerate() {
            let lo = c * per;
            let hi = lo + dst.len();
            let l = &logits[lo * vocab..hi * vocab];
            let p = rows.map(|r| &r[lo..hi]);
            sc.spawn(move || {
                dst.copy_from_slice(&crate::sampling::sample_reference(l, vocab, p));
            });
        }
    });
    out
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

/// A random int4 (W4A16) layer in the packed layout of [`crate::int4_matmul`]: random nibbles and zeros, f16-exact
/// scales of GPTQ's magnitude, and under act-order a `g_idx` from a random permutation of the inputs (as GPTQ's
/// desc_act writes it).
pub struct Int4Inputs {
    pub k: usize,
    pub n: usize,
    pub group_size: Option<usize>,
    pub zero_offset: u8,
    pub qweight: Vec<i32>,
    pub qzeros: Vec<i32>,
    pub scales: Vec<f32>,
    pub g_idx: Option<Vec<i32>>,
}

impl Int4Inputs {
    pub fn random(
        k: usize,
        n: usize,
        group_size: Option<usize>,
        act_order: bool,
        zero_offset: u8,
        rng: &mut Rng,
    ) -> Self {
        let groups = group_size.map_or(1, |g| k.div_ceil(g));
        let word = |rng: &mut Rng| rng.next_u64() as u32 as i32;
        let qweight = (0..k / 8 * n).map(|_| word(rng)).collect();
        let qzeros = (0..groups * n / 8).map(|_| word(rng)).collect();
        let scales = (0..groups * n)
            .map(|_| half::f16::from_f32(0.002 + 0.018 * rng.uniform()).to_f32())
            .collect();
        let g_idx = (act_order && group_size.is_some()).then(|| {
            let gs = group_size.unwrap_or(k);
            let mut perm: Vec<usize> = (0..k).collect();
            for i in (1..k).rev() {
                perm.swap(i, rng.below(i + 1));
            }
            perm.iter().map(|&p| (p / gs) as i32).collect()
        });
        Self {
            k,
            n,
            group_size,
            zero_offset,
            qweight,
            qzeros,
            scales,
            g_idx,
        }
    }

    pub fn groups(&self) -> usize {
        self.scales.len() / self.n
    }

    /// The packed tensors on `dev` (scales as f16, the checkpoints' dtype).
    pub fn tensors(&self, dev: &candle_core::Device) -> candle_core::Result<Int4Tensors> {
        use candle_core::{DType, Tensor};
        let g = self.groups();
        Ok(Int4Tensors {
            k: self.k,
            n: self.n,
            group_size: self.group_size,
            zero_offset: self.zero_offset,
            qweight: Tensor::from_slice(&self.qweight, (self.k / 8, self.n), dev)?,
            qzeros: Tensor::from_slice(&self.qzeros, (g, self.n / 8), dev)?,
            scales: Tensor::from_slice(&self.scales, (g, self.n), dev)?.to_dtype(DType::F16)?,
            g_idx: self
                .g_idx
                .as_ref()
                .map(|g| Tensor::from_slice(g, self.k, dev))
                .transpose()?,
        })
    }

    /// The dense `[N, K]` f32 weight.
    pub fn dense(&self) -> Vec<f32> {
        crate::int4_matmul::dequantize_reference(
            &self.qweight,
            &self.qzeros,
            &self.scales,
            self.g_idx.as_deref(),
            self.k,
            self.n,
            self.group_size,
            self.zero_offset,
        )
    }
}

/// [`Int4Inputs`] as tensors on a device.
pub struct Int4Tensors {
    k: usize,
    n: usize,
    group_size: Option<usize>,
    zero_offset: u8,
    qweight: candle_core::Tensor,
    qzeros: candle_core::Tensor,
    scales: candle_core::Tensor,
    g_idx: Option<candle_core::Tensor>,
}

impl Int4Tensors {
    pub fn matrix(&self) -> crate::int4_matmul::Int4Matrix<'_> {
        crate::int4_matmul::Int4Matrix {
            k: self.k,
            n: self.n,
            group_size: self.group_size,
            zero_offset: self.zero_offset,
            qweight: &self.qweight,
            qzeros: &self.qzeros,
            scales: &self.scales,
            g_idx: self.g_idx.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        m.check(case.num_blocks, 16).unwrap();
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
    fn dominant_keys_dominate_and_sit_where_documented() {
        let mut rng = Rng::new(4);
        let seqs = [
            SeqSpec::decode(40),
            SeqSpec::decode(40),
            SeqSpec::decode(700),
            SeqSpec::decode(33),
            SeqSpec::chunk(30, 5),
        ];
        let inp = AttentionInputs::new(&seqs, 16, (4, 2, 64), ScoreRegime::DominantKey, &mut rng);
        let positions: Vec<usize> = inp.dominant.iter().map(|d| d.unwrap()).collect();
        assert_eq!(&positions[..3], &[39, 0, 512]);
        assert!(positions[3] < 33);
        assert_eq!(&positions[4..], &[25, 26, 27, 28, 29]);
        // Token 0's score against its dominant key, head 3 (kv head 1): about DOMINANT_SCORE; others far below.
        let m = &inp.case.meta;
        let (hs, kvh) = (inp.hs, inp.kvh);
        let q = &inp.q[3 * hs..4 * hs];
        let score = |pos: usize| {
            let slot = inp.case.slot(0, pos);
            let (b, o) = (slot / 16, slot % 16);
            let base = ((b * kvh + 1) * 16 + o) * hs;
            q.iter()
                .zip(&inp.k[base..base + hs])
                .map(|(a, b)| a * b)
                .sum::<f32>()
                * inp.scale
        };
        let top = score(39);
        assert!((top - DOMINANT_SCORE).abs() < 10.0, "{top}");
        assert!((0..39).all(|p| score(p) < top - 50.0));
        assert_eq!(m.num_tokens(), 9);
    }

    #[test]
    fn scaled_q_overflows_exp_somewhere() {
        let mut rng = Rng::new(5);
        let inp = AttentionInputs::new(
            &[SeqSpec::decode(100)],
            16,
            (2, 1, 64),
            ScoreRegime::ScaledQ(40.0),
            &mut rng,
        );
        let q = &inp.q[..64];
        let max = (0..100)
            .map(|pos| {
                let slot = inp.case.slot(0, pos);
                let base = slot * 64;
                q.iter()
                    .zip(&inp.k[base..base + 64])
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    * inp.scale
            })
            .fold(f32::NEG_INFINITY, f32::max);
        assert!(max > 88.8, "the largest score {max} must overflow exp");
    }

    #[test]
    fn norm_rows_cycle_their_scales() {
        let x = norm_rows(12, 1000, &mut Rng::new(2));
        let rms = |r: usize| {
            (x[r * 1000..(r + 1) * 1000]
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                / 1000.0)
                .sqrt()
        };
        for r in 0..12 {
            let want = NORM_ROW_SCALES[r % 6];
            assert!((rms(r) / want - 1.0).abs() < 0.1, "row {r}: {}", rms(r));
        }
    }

    #[test]
    fn sampling_rows_are_deterministic_piecewise_and_cover_the_hostile_mix() {
        let (l, p) = sampling_rows(SamplingKind::Hostile, 0, 400, 50, 9);
        let (l2, p2) = sampling_rows(SamplingKind::Hostile, 100, 50, 50, 9);
        assert_eq!(&l[100 * 50..150 * 50].len(), &l2.len());
        assert!(
            l[100 * 50..150 * 50]
                .iter()
                .zip(&l2)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert_eq!(&p[100..150], &p2[..]);
        assert!(l.iter().any(|x| x.is_nan()));
        assert!(l.contains(&f32::INFINITY));
        assert!(l.contains(&f32::NEG_INFINITY));
        assert!(p.iter().any(|r| r.uniform == UNIFORM_NEAR_ONE));
        assert!(p.iter().any(|r| r.top_k as usize > 50));
        assert!(p.iter().any(|r| r.is_greedy()) && p.iter().any(|r| r.temperature.is_nan()));
        // Every pattern meets every parameter set once in 200 rows.
        let combos: std::collections::HashSet<(usize, usize)> = (0..200)
            .map(|r| {
                (
                    r % LOGIT_PATTERNS.len(),
                    (r / LOGIT_PATTERNS.len()) % HOSTILE_PARAM_SETS,
                )
            })
            .collect();
        assert_eq!(combos.len(), LOGIT_PATTERNS.len() * HOSTILE_PARAM_SETS);
        let par = sample_reference_parallel(&l, 50, Some(&p));
        assert_eq!(par, crate::sampling::sample_reference(&l, 50, Some(&p)));
        let (t1, p1) = sampling_rows(SamplingKind::Temperature1, 0, 3, 10, 1);
        assert!(t1.iter().all(|x| x.is_finite()) && p1.len() == 3);
        let (g, pg) = sampling_rows(SamplingKind::Greedy, 0, 3, 10, 1);
        assert!(pg.is_empty() && g.len() == 30);
    }
}
