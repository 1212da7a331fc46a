//! Bad step metadata is an error before any kernel or CPU loop reads it, with the same check on every device
//! (`HostAttentionMetadata::check`, called by paged attention and by `write_step_kv_cache`).

use candle_core::{DType, Device, Tensor};
use indus_kernels::check::{AttentionCase, Rng, SeqSpec};
use indus_kernels::metadata::{
    AttentionMetadata, HostAttentionMetadata, MetadataError, check_slots,
};
use indus_kernels::{KvCacheShape, paged_attention, write_kv_cache, write_step_kv_cache};

fn case() -> AttentionCase {
    AttentionCase::new(
        &[
            SeqSpec::decode(20),
            SeqSpec::chunk(40, 6),
            SeqSpec::prefill(3),
        ],
        16,
        1,
        &mut Rng::new(3),
    )
}

#[test]
fn a_valid_case_passes() {
    let c = case();
    assert_eq!(c.meta.check(c.num_blocks, 16), Ok(()));
    assert_eq!(c.meta.check_structure(), Ok(()));
    // Empty steps are valid too.
    let empty = HostAttentionMetadata {
        query_start_loc: vec![0],
        ..Default::default()
    };
    assert_eq!(empty.check(1, 16), Ok(()));
}

#[test]
fn each_broken_invariant_is_named() {
    let c = case();
    let nb = c.num_blocks;
    let broken = |f: &dyn Fn(&mut HostAttentionMetadata)| {
        let mut m = c.meta.clone();
        f(&mut m);
        m.check(nb, 16).unwrap_err()
    };
    assert!(matches!(
        broken(&|m| m.query_start_loc[1] = 8),
        MetadataError::QueryStartDecreases {
            seq: 1,
            from: 8,
            to: 7
        }
    ));
    assert!(matches!(
        broken(&|m| m.query_start_loc[0] = 1),
        MetadataError::QueryStartNotZero(1)
    ));
    assert!(matches!(
        broken(&|m| {
            m.query_start_loc.pop();
        }),
        MetadataError::QueryStartLen { got: 3, seqs: 3 }
    ));
    assert!(matches!(
        broken(&|m| *m.query_start_loc.last_mut().unwrap() += 1),
        MetadataError::QueryStartEnd { .. }
    ));
    assert!(matches!(
        broken(&|m| {
            m.block_tables.pop();
        }),
        MetadataError::BlockTablesShape { .. }
    ));
    assert!(matches!(
        broken(&|m| m.context_lens[1] = 5),
        MetadataError::QueryLongerThanContext {
            seq: 1,
            q_len: 6,
            ctx: 5
        }
    ));
    let width = c.meta.max_blocks_per_seq;
    assert!(matches!(
        broken(&|m| m.context_lens[0] = (width * 16 + 1) as u32),
        MetadataError::ContextExceedsTable { seq: 0, .. }
    ));
    assert!(matches!(
        broken(&|m| m.block_tables[width + 2] = nb as u32),
        MetadataError::BlockOutOfRange {
            seq: 1,
            index: 2,
            ..
        }
    ));
    let cap = (nb * 16) as i64;
    assert!(matches!(
        broken(&|m| m.slot_mapping[4] = cap),
        MetadataError::SlotOutOfRange { token: 4, .. }
    ));
    assert!(matches!(
        broken(&|m| m.slot_mapping[0] = -2),
        MetadataError::SlotOutOfRange {
            token: 0,
            slot: -2,
            ..
        }
    ));
    assert_eq!(c.meta.check(nb, 0), Err(MetadataError::ZeroBlockSize));
    // Padding entries after a context are never read, so any value there is fine; -1 slots are padding.
    let mut m = c.meta.clone();
    m.block_tables[width - 1] = u32::MAX;
    m.slot_mapping[0] = -1;
    assert_eq!(m.check(nb, 16), Ok(()));
    assert_eq!(check_slots(&[-1, 0, cap - 1], nb, 16), Ok(()));
    // A cache with fewer blocks than a table names is caught even if the table itself is well formed.
    assert!(matches!(
        c.meta.check(2, 16),
        Err(MetadataError::BlockOutOfRange { .. }) | Err(MetadataError::SlotOutOfRange { .. })
    ));
}

fn caches(c: &AttentionCase) -> (Tensor, Tensor, Tensor) {
    let (kvh, hs) = (2, 8);
    let dims = (c.num_blocks, kvh, 16, hs);
    let k = Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
    let v = Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
    let q = Tensor::zeros((c.meta.num_tokens(), 4, hs), DType::F32, &Device::Cpu).unwrap();
    (q, k, v)
}

#[test]
fn paged_attention_rejects_bad_metadata_before_reading_it() {
    let c = case();
    let (q, k, v) = caches(&c);
    let ok = AttentionMetadata::new(c.meta.clone(), &Device::Cpu).unwrap();
    paged_attention(&q, &k, &v, &ok, 0.3).unwrap();
    for f in [
        (|m: &mut HostAttentionMetadata| m.query_start_loc.swap(1, 2)) as fn(&mut _),
        |m| m.block_tables[0] = 10_000,
        |m| m.query_start_loc[0] = 1,
    ] {
        let mut bad = c.meta.clone();
        f(&mut bad);
        let m = AttentionMetadata::new(bad, &Device::Cpu).unwrap();
        let e = paged_attention(&q, &k, &v, &m, 0.3).unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn the_step_cache_write_rejects_a_slot_past_the_cache_and_writes_nothing() {
    let c = case();
    let (_, k, _) = caches(&c);
    let new = Tensor::ones((c.meta.num_tokens(), 2, 8), DType::F32, &Device::Cpu).unwrap();
    let mut bad = c.meta.clone();
    let last = bad.slot_mapping.len() - 1;
    bad.slot_mapping[last] = (c.num_blocks * 16) as i64;
    let m = AttentionMetadata::new(bad.clone(), &Device::Cpu).unwrap();
    assert!(write_step_kv_cache(&k, &new, &m).is_err());
    assert_eq!(k.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    // The plain write checks every slot before the first write too.
    assert!(write_kv_cache(&k, &new, &m.slot_mapping).is_err());
    assert_eq!(k.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    // And the good metadata writes every token.
    let m = AttentionMetadata::new(c.meta.clone(), &Device::Cpu).unwrap();
    write_step_kv_cache(&k, &new, &m).unwrap();
    let written = k.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(written as usize, c.meta.num_tokens() * 2 * 8);
}

#[test]
fn a_step_is_checked_once_per_cache_shape() {
    let c = case();
    let m = AttentionMetadata::new(c.meta.clone(), &Device::Cpu).unwrap();
    let shape = KvCacheShape {
        num_blocks: c.num_blocks,
        num_kv_heads: 2,
        block_size: 16,
        head_size: 8,
    };
    m.validate_for(&shape).unwrap();
    m.validate_for(&shape).unwrap();
    // A different, too small cache is checked again, and fails.
    let small = KvCacheShape {
        num_blocks: 1,
        ..shape
    };
    assert!(m.validate_for(&small).is_err());
    // A clone whose host metadata was swapped for a broken one is not taken as checked.
    let mut swapped = m.clone();
    let mut broken = c.meta.clone();
    broken.block_tables[0] = 9_999;
    swapped.host = std::sync::Arc::new(broken);
    assert!(swapped.validate_for(&shape).is_err());
}
