//! The CPU paged attention's sliding window and score soft-cap against a naive reference
//! written here: a prefill chunk after cached tokens, so windows cut through both the
//! cached and the new part, across block boundaries.

use candle_core::{Device, Tensor};
use indus_kernels::metadata::HostAttentionMetadata;
use indus_kernels::{AttentionMetadata, AttentionVariant, paged_attention_variant};

const BS: usize = 4;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HS: usize = 8;

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(97));
            ((x >> 8) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Query `j` of a `q_len`-token chunk ending a `ctx`-token sequence, head `h`, computed over
/// plain position-ordered keys.
fn naive(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    ctx: usize,
    q_len: usize,
    scale: f32,
    var: AttentionVariant,
) -> Vec<f32> {
    // Cache: block b = position / BS (identity block table), [blocks, kv, bs, hs].
    let at = |cache: &[f32], pos: usize, kvh: usize| -> Vec<f32> {
        let base = (((pos / BS) * KV_HEADS + kvh) * BS + pos % BS) * HS;
        cache[base..base + HS].to_vec()
    };
    let mut out = Vec::new();
    for j in 0..q_len {
        let p = ctx - q_len + j;
        let lo = var.window.map(|w| (p + 1).saturating_sub(w)).unwrap_or(0);
        for h in 0..HEADS {
            let kvh = h / (HEADS / KV_HEADS);
            let qr = &q[(j * HEADS + h) * HS..][..HS];
            let scores: Vec<f32> = (lo..=p)
                .map(|pos| {
                    let s: f32 = qr.iter().zip(at(k, pos, kvh)).map(|(a, b)| a * b).sum();
                    let s = s * scale;
                    var.softcap.map(|c| c * (s / c).tanh()).unwrap_or(s)
                })
                .collect();
            let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let z: f32 = e.iter().sum();
            let mut acc = vec![0f32; HS];
            for (pos, w) in (lo..=p).zip(&e) {
                for (a, x) in acc.iter_mut().zip(at(v, pos, kvh)) {
                    *a += w / z * x;
                }
            }
            out.extend(acc);
        }
    }
    out
}

fn run(ctx: usize, q_len: usize, var: AttentionVariant) -> (Vec<f32>, Vec<f32>) {
    let dev = Device::Cpu;
    let blocks = ctx.div_ceil(BS);
    let n = blocks * KV_HEADS * BS * HS;
    let (kv, vv, qv) = (values(n, 1), values(n, 2), values(q_len * HEADS * HS, 3));
    let host = HostAttentionMetadata {
        slot_mapping: ((ctx - q_len) as i64..ctx as i64).collect(),
        block_tables: (0..blocks as u32).collect(),
        max_blocks_per_seq: blocks,
        context_lens: vec![ctx as u32],
        query_start_loc: vec![0, q_len as u32],
    };
    let meta = AttentionMetadata::new(host, &dev).unwrap();
    let shape = (blocks, KV_HEADS, BS, HS);
    let k = Tensor::from_vec(kv.clone(), shape, &dev).unwrap();
    let v = Tensor::from_vec(vv.clone(), shape, &dev).unwrap();
    let q = Tensor::from_vec(qv.clone(), (q_len, HEADS, HS), &dev).unwrap();
    let scale = 0.35;
    let got = paged_attention_variant(&q, &k, &v, &meta, scale, var)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (got, naive(&qv, &kv, &vv, ctx, q_len, scale, var))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn sliding_window_sees_only_the_last_window_keys() {
    for window in [1, 3, 5, 9] {
        let var = AttentionVariant {
            window: Some(window),
            softcap: None,
        };
        let (got, want) = run(19, 7, var);
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "window {window}: {d}");
        // The window must matter: full attention differs.
        let (_, full) = run(19, 7, AttentionVariant::default());
        assert!(
            max_diff(&got, &full) > 1e-3,
            "window {window} changed nothing"
        );
    }
}

#[test]
fn window_of_one_returns_the_own_value() {
    let var = AttentionVariant {
        window: Some(1),
        softcap: None,
    };
    let (got, _) = run(10, 3, var);
    let vv = values(3 * KV_HEADS * BS * HS, 2);
    for j in 0..3 {
        let p = 7 + j;
        for h in 0..HEADS {
            let kvh = h / (HEADS / KV_HEADS);
            let base = (((p / BS) * KV_HEADS + kvh) * BS + p % BS) * HS;
            let row = &got[(j * HEADS + h) * HS..][..HS];
            assert!(max_diff(row, &vv[base..base + HS]) < 1e-6);
        }
    }
}

#[test]
fn softcap_matches_the_reference_and_a_window_wider_than_the_context_is_full() {
    let capped = AttentionVariant {
        window: None,
        softcap: Some(0.5),
    };
    let (got, want) = run(13, 13, capped);
    assert!(max_diff(&got, &want) < 1e-5);
    let (plain, _) = run(13, 13, AttentionVariant::default());
    assert!(
        max_diff(&got, &plain) > 1e-3,
        "a cap of 0.5 must change scores"
    );
    let wide = AttentionVariant {
        window: Some(100),
        softcap: None,
    };
    assert_eq!(run(13, 13, wide).0, plain);
}
