//! The GPU check's comparison, fed the CPU reference's output corrupted the way each bug a careful reading could not
//! rule out would corrupt it, must fail; fed the reference as a correct bf16/f16 kernel would round it, must pass.
//! These run the check's own inputs (indus_kernels::check) and its own comparison and tolerances.

use candle_core::{DType, Device, Tensor};
use indus_kernels::check::inputs::norm_rows;
use indus_kernels::check::{
    AttentionInputs, Comparison, Rng, ScoreRegime, SeqSpec, compare, tolerance,
};
use indus_kernels::metadata::{AttentionMetadata, HostAttentionMetadata};

/// How the plain attention below departs from the reference.
#[derive(Clone, Copy, Default)]
struct Bug {
    /// exp(score) straight, no max subtracted (a softmax that overflows on large scores).
    no_max: bool,
    /// Probabilities rounded to this dtype before P.V (what the tensor-core prefill kernel does, correctly).
    round_p: Option<DType>,
    /// (query token, cache position) whose key is left out of the softmax.
    drop: Option<(usize, usize)>,
}

fn round(v: f32, dt: DType) -> f32 {
    match dt {
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        DType::F16 => half::f16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// Paged attention written out plainly over the check's inputs, f32 throughout, with an optional bug.
fn attention(inp: &AttentionInputs, bug: Bug) -> Vec<f32> {
    let m: &HostAttentionMetadata = &inp.case.meta;
    let (heads, kvh, hs, bs) = (inp.heads, inp.kvh, inp.hs, inp.case.block_size);
    let group = heads / kvh;
    let mut out = vec![0f32; inp.q.len()];
    for s in 0..m.num_seqs() {
        let (q0, q1) = (
            m.query_start_loc[s] as usize,
            m.query_start_loc[s + 1] as usize,
        );
        let ctx = m.context_lens[s] as usize;
        for t in q0..q1 {
            let visible = ctx - (q1 - q0) + (t - q0) + 1;
            for h in 0..heads {
                let q = &inp.q[(t * heads + h) * hs..][..hs];
                let row = |pos: usize| {
                    let slot = inp.case.slot(s, pos);
                    ((slot / bs * kvh + h / group) * bs + slot % bs) * hs
                };
                let positions: Vec<usize> =
                    (0..visible).filter(|&p| bug.drop != Some((t, p))).collect();
                let scores: Vec<f32> = positions
                    .iter()
                    .map(|&p| {
                        let k = &inp.k[row(p)..][..hs];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * inp.scale
                    })
                    .collect();
                let mx = if bug.no_max {
                    0.0
                } else {
                    scores.iter().copied().fold(f32::NEG_INFINITY, f32::max)
                };
                let w: Vec<f32> = scores.iter().map(|s| (s - mx).exp()).collect();
                let denom: f32 = w.iter().sum();
                let o = &mut out[(t * heads + h) * hs..][..hs];
                for (&p, &wi) in positions.iter().zip(&w) {
                    let wi = bug.round_p.map_or(wi, |dt| round(wi, dt));
                    for (d, &vv) in o.iter_mut().zip(&inp.v[row(p)..][..hs]) {
                        *d += wi * vv;
                    }
                }
                o.iter_mut().for_each(|d| *d /= denom);
            }
        }
    }
    out
}

fn library_reference(inp: &AttentionInputs) -> Vec<f32> {
    let t = |x: &[f32], d: &[usize]| Tensor::from_slice(x, d, &Device::Cpu).unwrap();
    let m = AttentionMetadata::new(inp.case.meta.clone(), &Device::Cpu).unwrap();
    indus_kernels::paged_attention(
        &t(&inp.q, &inp.q_dims()),
        &t(&inp.k, &inp.cache_dims()),
        &t(&inp.v, &inp.cache_dims()),
        &m,
        inp.scale,
    )
    .unwrap()
    .flatten_all()
    .unwrap()
    .to_vec1()
    .unwrap()
}

fn mixed() -> Vec<SeqSpec> {
    vec![
        SeqSpec::decode(50),
        SeqSpec::prefill(70),
        SeqSpec::decode(513),
        SeqSpec::chunk(300, 1),
        SeqSpec::chunk(90, 33),
    ]
}

fn long() -> Vec<SeqSpec> {
    vec![
        SeqSpec::decode(1000),
        SeqSpec::decode(2500),
        SeqSpec::decode(4097),
    ]
}

fn inputs(seqs: &[SeqSpec], regime: ScoreRegime, seed: u64) -> AttentionInputs {
    AttentionInputs::new(seqs, 16, (32, 8, 128), regime, &mut Rng::new(seed))
}

fn fails(c: &Comparison, dt: DType) -> bool {
    !c.within(tolerance(dt))
}

fn report(what: &str, c: &Comparison) {
    println!(
        "{what}: batch {:.2e}, worst row {:.2e} (row {} of {})",
        c.rel_l2, c.worst_row_rel_l2, c.worst_row, c.rows
    );
}

#[test]
fn the_plain_attention_is_the_reference() {
    for regime in [
        ScoreRegime::Random,
        ScoreRegime::ScaledQ(40.0),
        ScoreRegime::DominantKey,
    ] {
        let inp = inputs(&mixed(), regime, 1);
        let c = compare(
            &attention(&inp, Bug::default()),
            &library_reference(&inp),
            128,
        );
        // The library sums q·k in eight lanes, this plain version serially: with scores 40×
        // the usual size the softmax turns that order into ~3e-5 on the worst row, still well
        // inside the f32 row tolerance (2e-4) the GPU check applies.
        assert!(c.worst_row_rel_l2 < 1e-4, "{regime:?}: {c:?}");
    }
}

#[test]
fn a_decode_row_missing_its_newest_key_fails_though_the_batch_passes() {
    let inp = inputs(&mixed(), ScoreRegime::Random, 2);
    let want = attention(&inp, Bug::default());
    // Token 0 is the decode(50) row; its newest key is position 49.
    let got = attention(
        &inp,
        Bug {
            drop: Some((0, 49)),
            ..Default::default()
        },
    );
    let c = compare(&got, &want, 128);
    report("mixed batch, decode row without its newest key", &c);
    // The batch number dilutes one bad row sixty-fold, to about the tolerance; the row's own number cannot miss.
    assert!(c.rel_l2 < c.worst_row_rel_l2 / 30.0, "{c:?}");
    assert!(fails(&c, DType::BF16) && fails(&c, DType::F32), "{c:?}");
    assert!(
        c.worst_row < 32,
        "the worst row is one of token 0's heads: {c:?}"
    );
}

#[test]
fn a_long_row_missing_one_key_fails_though_the_batch_passes() {
    // Random data: the 4097-token row without its newest key passes the batch tolerance, fails the row's.
    let seqs = long();
    let inp = inputs(&seqs, ScoreRegime::Random, 3);
    let want = attention(&inp, Bug::default());
    let got = attention(
        &inp,
        Bug {
            drop: Some((2, 4096)),
            ..Default::default()
        },
    );
    let c = compare(&got, &want, 128);
    report("random, 4097-token row without its newest key", &c);
    assert!(
        c.rel_l2 < tolerance(DType::BF16).batch,
        "the batch number alone hides it: {c:?}"
    );
    assert!(fails(&c, DType::BF16), "{c:?}");
    // The dominant-key case makes the missing key carry its whole row, wherever it sits.

    let inp = inputs(&seqs, ScoreRegime::DominantKey, 3);
    let want = attention(&inp, Bug::default());
    for t in 0..3 {
        let pos = inp.dominant[t].unwrap();
        let got = attention(
            &inp,
            Bug {
                drop: Some((t, pos)),
                ..Default::default()
            },
        );
        let c = compare(&got, &want, 128);
        report(&format!("dominant key, row {t} without key {pos}"), &c);
        assert!(fails(&c, DType::BF16) && c.worst_row_rel_l2 > 0.3, "{c:?}");
    }
    // The split-K partition boundary: seq 2 (s % 4 == 2) of a long case has its dominant key at 512.
    assert_eq!(inp.dominant[2], Some(512));
}

#[test]
fn a_softmax_without_max_subtraction_fails_on_large_scores_only() {
    for (regime, must_fail) in [
        (ScoreRegime::Random, false),
        (ScoreRegime::ScaledQ(40.0), true),
        (ScoreRegime::DominantKey, true),
    ] {
        for seqs in [mixed(), long()] {
            let inp = inputs(&seqs, regime, 4);
            let want = attention(&inp, Bug::default());
            let got = attention(
                &inp,
                Bug {
                    no_max: true,
                    ..Default::default()
                },
            );
            let c = compare(&got, &want, 128);
            report(&format!("{regime:?}, softmax without max"), &c);
            assert_eq!(fails(&c, DType::BF16), must_fail, "{regime:?}: {c:?}");
        }
    }
}

#[test]
fn the_reference_as_a_correct_bf16_or_f16_kernel_rounds_it_passes() {
    for regime in [
        ScoreRegime::Random,
        ScoreRegime::ScaledQ(40.0),
        ScoreRegime::DominantKey,
    ] {
        for seqs in [mixed(), long()] {
            let inp = inputs(&seqs, regime, 5);
            let want = attention(&inp, Bug::default());
            for dt in [DType::BF16, DType::F16] {
                // Output rounded once; and the prefill kernel's probabilities rounded before P.V as well.
                let out_only: Vec<f32> = want.iter().map(|&v| round(v, dt)).collect();
                let with_p: Vec<f32> = attention(
                    &inp,
                    Bug {
                        round_p: Some(dt),
                        ..Default::default()
                    },
                )
                .iter()
                .map(|&v| round(v, dt))
                .collect();
                for (what, got) in [
                    ("output rounded", &out_only),
                    ("P and output rounded", &with_p),
                ] {
                    let c = compare(got, &want, 128);
                    report(&format!("{regime:?} {dt:?} {what}"), &c);
                    assert!(c.within(tolerance(dt)), "{regime:?} {dt:?} {what}: {c:?}");
                    // With room to spare: a correct kernel is not a near miss.
                    assert!(c.worst_row_rel_l2 < 0.5 * tolerance(dt).row, "{c:?}");
                }
            }
        }
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, with_eps: bool) -> Vec<f32> {
    x.chunks(w.len())
        .flat_map(|row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
            let inv = 1.0 / (ms + if with_eps { eps } else { 0.0 }).sqrt();
            row.iter().zip(w).map(move |(v, g)| v * inv * g)
        })
        .collect()
}

#[test]
fn rms_norm_without_eps_fails_on_the_small_rows_and_rounding_passes() {
    let mut rng = Rng::new(6);
    for (rows, dim) in [(12, 4096), (12, 1001), (6, 13)] {
        let x = norm_rows(rows, dim, &mut rng);
        let w: Vec<f32> = (0..dim).map(|_| 1.0 + 0.1 * rng.normal()).collect();
        for eps in [1e-5f32, 1e-6] {
            let want = rms_norm(&x, &w, eps, true);
            // The library's reference is the same computation.
            let lib: Vec<f32> = indus_kernels::rms_norm(
                &Tensor::from_slice(&x, (rows, dim), &Device::Cpu).unwrap(),
                &Tensor::from_slice(&w, dim, &Device::Cpu).unwrap(),
                eps,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
            assert!(compare(&lib, &want, dim).worst_row_rel_l2 < 1e-6);
            let no_eps = rms_norm(&x, &w, eps, false);
            let c = compare(&no_eps, &want, dim);
            report(&format!("rms_norm {rows}x{dim} eps {eps:e} dropped"), &c);
            assert!(fails(&c, DType::BF16), "{c:?}");
            for dt in [DType::BF16, DType::F16] {
                let r: Vec<f32> = want.iter().map(|&v| round(v, dt)).collect();
                let c = compare(&r, &want, dim);
                assert!(c.within(tolerance(dt)), "{dt:?}: {c:?}");
            }
        }
    }
}
