//! The attention's two inner products in AVX-512 registers. Written with intrinsics because
//! the portable loops compile to 256-bit multiplies and adds with a broadcast per query and
//! key (and small changes to them fall back to scalar code): here one 16-lane load feeds
//! four fused multiply-adds whose broadcast operand comes straight from memory. The portable
//! functions in `mod.rs` are the reference; a test checks these against them.

use super::{LANES, QUERIES};
use std::arch::x86_64::*;

/// As `scores_portable`.
///
/// # Safety
/// The CPU has AVX-512 F. `query` holds `QUERIES × d`, `keys_t` `d × n_pad` and `scores`
/// `QUERIES × n_pad` values, with `n_pad` a multiple of `LANES` (checked).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn scores(
    query: &[f32],
    keys_t: &[f32],
    d: usize,
    n_pad: usize,
    scores: &mut [f32],
) {
    assert!(
        n_pad.is_multiple_of(LANES)
            && query.len() >= QUERIES * d
            && keys_t.len() >= d * n_pad
            && scores.len() >= QUERIES * n_pad
    );
    let (q, k, s) = (query.as_ptr(), keys_t.as_ptr(), scores.as_mut_ptr());
    for j0 in (0..n_pad).step_by(LANES) {
        let mut acc = [_mm512_setzero_ps(); QUERIES];
        for c in 0..d {
            // SAFETY: c < d and j0 + 16 <= n_pad, so c * n_pad + j0 + 16 <= d * n_pad.
            let kv = unsafe { _mm512_loadu_ps(k.add(c * n_pad + j0)) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: i < QUERIES and c < d.
                let qc = unsafe { *q.add(i * d + c) };
                *a = _mm512_fmadd_ps(_mm512_set1_ps(qc), kv, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: i * n_pad + j0 + 16 <= QUERIES * n_pad.
            unsafe { _mm512_storeu_ps(s.add(i * n_pad + j0), *a) };
        }
    }
}

/// As `context_portable`; the last `d % 16` columns go through masked loads and stores.
///
/// # Safety
/// The CPU has AVX-512 F. `scores` holds `QUERIES × n_pad` values, `values` `n × d` with
/// `n ≤ n_pad`, and `context` `QUERIES × d` (checked).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn context(
    scores: &[f32],
    values: &[f32],
    n_pad: usize,
    inv: &[f32; QUERIES],
    context: &mut [f32],
) {
    let d = context.len() / QUERIES;
    let n = values.len().checked_div(d).unwrap_or(0);
    assert!(n <= n_pad && scores.len() >= QUERIES * n_pad && context.len() == QUERIES * d);
    let (p, v, o) = (scores.as_ptr(), values.as_ptr(), context.as_mut_ptr());
    for c0 in (0..d).step_by(LANES) {
        let width = LANES.min(d - c0);
        let mask: __mmask16 = if width == LANES {
            !0
        } else {
            (1u16 << width) - 1
        };
        let mut acc = [_mm512_setzero_ps(); QUERIES];
        for j in 0..n {
            // SAFETY: j < n and the mask keeps the load inside row j's d columns.
            let vv = unsafe { _mm512_maskz_loadu_ps(mask, v.add(j * d + c0)) };
            for (i, a) in acc.iter_mut().enumerate() {
                // SAFETY: i < QUERIES and j < n <= n_pad.
                let pj = unsafe { *p.add(i * n_pad + j) };
                *a = _mm512_fmadd_ps(_mm512_set1_ps(pj), vv, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let scaled = _mm512_mul_ps(*a, _mm512_set1_ps(inv[i]));
            // SAFETY: the mask keeps the store inside query i's d columns.
            unsafe { _mm512_mask_storeu_ps(o.add(i * d + c0), mask, scaled) };
        }
    }
}
