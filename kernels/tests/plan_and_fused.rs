//! CPU tests of the pieces the CUDA path relies on: the kernel plan of paged attention (which kernels a step
//! launches, split-K choices) and the fused add + RMSNorm op's own CPU side against the unfused pair.

use candle_core::{DType, Device, Tensor};
use indus_kernels::check::{AttentionCase, Rng, SeqSpec};
use indus_kernels::metadata::HostAttentionMetadata;
use indus_kernels::norm::fused_add_rms_norm_op;
use indus_kernels::paged_attention::{
    DECODE_PARTITION_SIZE, DecodeSplit, PagedAttentionOptions, plan_attention,
};

fn meta(seqs: &[SeqSpec]) -> HostAttentionMetadata {
    AttentionCase::new(seqs, 16, 0, &mut Rng::new(1)).meta
}

const H100_SMS: usize = 132;

#[test]
fn decode_batch_uses_the_general_kernel_only() {
    let m = meta(&[SeqSpec::decode(100), SeqSpec::decode(7)]);
    let p = plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, Default::default()).unwrap();
    assert!(p.general && !p.prefill && !p.only_single);
    assert_eq!((p.group_max, p.head_chunks, p.partitions), (4, 1, 1));
}

#[test]
fn long_decode_contexts_split_unless_told_not_to() {
    let m = meta(&[SeqSpec::decode(4096); 4]);
    let auto = plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, Default::default()).unwrap();
    assert_eq!(auto.partitions, 4096 / DECODE_PARTITION_SIZE);
    let off = PagedAttentionOptions {
        decode_split: DecodeSplit::Off,
        ..Default::default()
    };
    assert_eq!(
        plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, off)
            .unwrap()
            .partitions,
        1
    );
    let p256 = PagedAttentionOptions {
        decode_split: DecodeSplit::Partition(256),
        ..Default::default()
    };
    let p = plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, p256).unwrap();
    assert_eq!((p.partitions, p.partition_size), (16, 256));
    let bad = PagedAttentionOptions {
        decode_split: DecodeSplit::Partition(100),
        ..Default::default()
    };
    assert!(plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, bad).is_err());
}

#[test]
fn short_contexts_with_a_full_gpu_do_not_split() {
    let m = meta(&vec![SeqSpec::decode(1024); 256]);
    let p = plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, Default::default()).unwrap();
    assert_eq!(p.partitions, 1);
    let m = meta(&[SeqSpec::decode(512)]);
    let p = plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, Default::default()).unwrap();
    assert_eq!(p.partitions, 1);
}

#[test]
fn mixed_batches_split_work_between_prefill_and_decode_kernels() {
    let m = meta(&[
        SeqSpec::decode(5000),
        SeqSpec::prefill(40),
        SeqSpec::chunk(90, 1),
    ]);
    let p = plan_attention(&m, DType::F16, 32, 8, 64, H100_SMS, Default::default()).unwrap();
    assert!(p.prefill && p.general && p.only_single);
    assert_eq!(p.partitions, 1, "no split-K in mixed batches");
    // Pure prefill: the tensor-core kernel alone.
    let m = meta(&[SeqSpec::prefill(40), SeqSpec::chunk(90, 9)]);
    let p = plan_attention(&m, DType::BF16, 32, 8, 128, H100_SMS, Default::default()).unwrap();
    assert!(p.prefill && !p.general);
}

#[test]
fn no_tensor_core_kernel_means_the_general_kernel_does_everything() {
    let m = meta(&[SeqSpec::prefill(40), SeqSpec::decode(3)]);
    for (dt, hs) in [(DType::F32, 128), (DType::BF16, 256)] {
        let p = plan_attention(&m, dt, 8, 8, hs, H100_SMS, Default::default()).unwrap();
        assert!(p.general && !p.prefill && !p.only_single, "{dt:?} {hs}");
    }
    let forced = PagedAttentionOptions {
        general_kernel_only: true,
        ..Default::default()
    };
    let p = plan_attention(&m, DType::BF16, 8, 8, 128, H100_SMS, forced).unwrap();
    assert!(p.general && !p.prefill);
}

#[test]
fn gqa_groups_map_to_kernel_instances() {
    let m = meta(&[SeqSpec::decode(10)]);
    for (heads, kvh, gmax, chunks) in [
        (8, 8, 1, 1),
        (16, 8, 2, 1),
        (32, 8, 4, 1),
        (28, 4, 8, 1), // group of 7: one CTA of 8 with one idle head
        (14, 2, 8, 1),
        (32, 4, 8, 1),
        (16, 1, 8, 2),
        (40, 2, 8, 3), // group of 20
    ] {
        let p = plan_attention(
            &m,
            DType::BF16,
            heads,
            kvh,
            128,
            H100_SMS,
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            (p.group_max, p.head_chunks),
            (gmax, chunks),
            "{heads}/{kvh}"
        );
    }
}

#[test]
fn unsupported_shapes_are_errors() {
    let m = meta(&[SeqSpec::decode(10)]);
    assert!(plan_attention(&m, DType::BF16, 8, 8, 96, H100_SMS, Default::default()).is_err());
    assert!(plan_attention(&m, DType::F64, 8, 8, 128, H100_SMS, Default::default()).is_err());
    assert!(plan_attention(&m, DType::BF16, 10, 4, 128, H100_SMS, Default::default()).is_err());
}

#[test]
fn fused_add_rms_norm_op_matches_the_unfused_pair() {
    let mut rng = Rng::new(9);
    let (rows, dim) = (5, 96);
    let x = rng.normals(rows * dim, 1.0);
    let r = rng.normals(rows * dim, 1.0);
    let w: Vec<f32> = (0..dim).map(|_| 1.0 + 0.1 * rng.normal()).collect();
    for dt in [DType::F32, DType::BF16, DType::F16] {
        let t = |v: &[f32], s: &[usize]| {
            Tensor::from_slice(v, s, &Device::Cpu)
                .unwrap()
                .to_dtype(dt)
                .unwrap()
        };
        let (xt, rt, wt) = (t(&x, &[rows, dim]), t(&r, &[rows, dim]), t(&w, &[dim]));
        let (n1, s1) = indus_kernels::fused_add_rms_norm(&xt, &rt, &wt, 1e-6).unwrap();
        let (n2, s2) = fused_add_rms_norm_op(&xt, &rt, &wt, 1e-6).unwrap();
        assert_eq!(n2.dims(), &[rows, dim]);
        let f = |t: &Tensor| -> Vec<f32> {
            t.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(f(&n1), f(&n2), "{dt:?} normed");
        assert_eq!(f(&s1), f(&s2), "{dt:?} residual");
    }
}
