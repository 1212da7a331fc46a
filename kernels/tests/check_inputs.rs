//! The GPU check's inputs, exercised against the CPU references: the poisoned attention cases must be readable by
//! a correct kernel without ever touching a NaN, and the cache write must leave every other slot alone. If these
//! fail, a GPU failure would say nothing about the kernel.

use candle_core::{DType, Device, Tensor};
use indus_kernels::check::{AttentionCase, Rng, SeqSpec, mismatches_exact, rel_l2};
use indus_kernels::metadata::AttentionMetadata;

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn reference_attention_never_reads_a_poisoned_slot() {
    let mut rng = Rng::new(11);
    let scenarios = [
        vec![
            SeqSpec::decode(1),
            SeqSpec::decode(15),
            SeqSpec::decode(16),
            SeqSpec::decode(17),
            SeqSpec::decode(33),
        ],
        vec![
            SeqSpec::prefill(1),
            SeqSpec::prefill(16),
            SeqSpec::prefill(17),
        ],
        vec![SeqSpec::chunk(40, 7), SeqSpec::chunk(64, 64)],
        vec![
            SeqSpec::decode(50),
            SeqSpec::prefill(20),
            SeqSpec::chunk(30, 1),
        ],
    ];
    let (heads, kvh, hs) = (8, 2, 16);
    for seqs in &scenarios {
        let case = AttentionCase::new(seqs, 16, 2, &mut rng);
        let dims = [case.num_blocks, kvh, case.block_size, hs];
        let k = case.cache(kvh, hs, &mut rng);
        let v = case.cache(kvh, hs, &mut rng);
        assert!(
            k.iter().any(|x| x.is_nan()),
            "the case must poison something"
        );
        let q = rng.normals(case.meta.num_tokens() * heads * hs, 1.0);
        let meta = AttentionMetadata::new(case.meta.clone(), &Device::Cpu).unwrap();
        for dt in [DType::F32, DType::BF16] {
            let t = |x: &[f32], s: &[usize]| {
                Tensor::from_slice(x, s, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dt)
                    .unwrap()
            };
            let out = indus_kernels::paged_attention(
                &t(&q, &[case.meta.num_tokens(), heads, hs]),
                &t(&k, &dims),
                &t(&v, &dims),
                &meta,
                0.25,
            )
            .unwrap();
            let out = flat(&out);
            assert!(out.iter().all(|x| x.is_finite()), "{seqs:?} {dt:?}");
            // And the metric the GPU check uses is zero against itself.
            assert_eq!(rel_l2(&out, &out), 0.0);
        }
    }
}

#[test]
fn cache_write_touches_only_its_slots() {
    let (blocks, kvh, bs, hs) = (4, 2, 16, 8);
    let cache = Tensor::from_slice(
        &vec![f32::NAN; blocks * kvh * bs * hs],
        (blocks, kvh, bs, hs),
        &Device::Cpu,
    )
    .unwrap();
    let mut rng = Rng::new(5);
    let new = rng.normals(3 * kvh * hs, 1.0);
    let new_t = Tensor::from_slice(&new, (3, kvh, hs), &Device::Cpu).unwrap();
    let slots = Tensor::new(&[17i64, -1, 63], &Device::Cpu).unwrap();
    indus_kernels::write_kv_cache(&cache, &new_t, &slots).unwrap();
    let got = flat(&cache);
    let mut want = vec![f32::NAN; got.len()];
    for (t, slot) in [(0usize, 17usize), (2, 63)] {
        let (b, o) = (slot / bs, slot % bs);
        for h in 0..kvh {
            let dst = ((b * kvh + h) * bs + o) * hs;
            want[dst..dst + hs].copy_from_slice(&new[(t * kvh + h) * hs..][..hs]);
        }
    }
    assert_eq!(mismatches_exact(&got, &want), 0);
    assert_eq!(got.iter().filter(|x| x.is_finite()).count(), 2 * kvh * hs);
}
