//! The host sampler's hot loops (src/engine/sampler.rs): a 128k-vocabulary row turned into
//! candidates and their weights. They live here, not in the engine, because this crate is
//! optimised in every profile: in the server's unoptimised dev builds these loops ran ~20x
//! slower and made sampling, not the model, the cost of a CPU step at batch 32.

use crate::fma_exp::exp_fma;

/// Every token of a row as a `(token id, logit)` candidate, in vocabulary order.
#[inline(never)]
pub fn all_candidates(logits: &[f32]) -> Vec<(u32, f32)> {
    logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect()
}

/// Replaces each candidate's logit by its weight `exp_fma((logit - max) / T)` and returns
/// the total weight, summed in candidate order. With `ln_min_p`, candidates whose scaled
/// logit is below it are dropped first (min-p against the top token, tested in the log
/// domain as the device sampler does); the others keep their order.
pub fn candidate_weights(cands: &mut Vec<(u32, f32)>, inv_t: f32, ln_min_p: Option<f32>) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA, the one feature the function is compiled for.
        return unsafe { candidate_weights_fma(cands, inv_t, ln_min_p) };
    }
    candidate_weights_body(cands, inv_t, ln_min_p)
}

/// The same loop with the exp's `mul_add`s as FMA instructions rather than calls into libm's
/// software `fmaf` (a third of a CPU step's time before); both round once, so the bits agree.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
#[inline(never)]
unsafe fn candidate_weights_fma(
    cands: &mut Vec<(u32, f32)>,
    inv_t: f32,
    ln_min_p: Option<f32>,
) -> f32 {
    candidate_weights_body(cands, inv_t, ln_min_p)
}

#[inline(always)]
fn candidate_weights_body(cands: &mut Vec<(u32, f32)>, inv_t: f32, ln_min_p: Option<f32>) -> f32 {
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    for c in cands.iter_mut() {
        c.1 = (c.1 - max) * inv_t;
    }
    if let Some(ln_min_p) = ln_min_p {
        cands.retain(|c| c.1 >= ln_min_p);
    }
    let mut total = 0f32;
    for c in cands.iter_mut() {
        c.1 = exp_fma(c.1);
        total += c.1;
    }
    total
}

/// The candidate at which the running weight first reaches `r` (a uniform draw times the
/// total), walking in candidate order; the last one if rounding leaves `r` above the total.
#[inline(never)]
pub fn draw(cands: &[(u32, f32)], mut r: f32) -> u32 {
    for c in cands {
        r -= c.1;
        if r <= 0.0 {
            return c.0;
        }
    }
    cands.last().map_or(0, |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_the_scaled_exps_and_min_p_drops_only_the_unlikely() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let mut cands = all_candidates(&logits);
        assert_eq!(cands[2], (2, -2.0));
        let total = candidate_weights(&mut cands, 0.5, Some(0.2f32.ln()));
        // (l - 3) / 2 >= ln 0.2 = -1.61 keeps logits >= -0.22: ids 0, 1, 3, 4.
        let ids: Vec<u32> = cands.iter().map(|c| c.0).collect();
        assert_eq!(ids, [0, 1, 3, 4]);
        for &(id, w) in &cands {
            let want = ((logits[id as usize] - 3.0) * 0.5).exp();
            assert!((w - want).abs() <= 1e-6 * want, "{id}: {w} vs {want}");
        }
        let sum: f32 = cands.iter().map(|c| c.1).sum();
        assert_eq!(total, sum);
        let mut all = all_candidates(&logits);
        assert!(candidate_weights(&mut all, 0.5, None) > total);
        assert_eq!(all.len(), 5);
        // The FMA build and the portable one give the same bits.
        let row: Vec<f32> = (0..4096)
            .map(|i| ((i * 7919) % 613) as f32 * 0.037 - 11.0)
            .collect();
        let mut a = all_candidates(&row);
        let mut b = a.clone();
        let ta = candidate_weights(&mut a, 1.3, Some(-9.0));
        let tb = candidate_weights_body(&mut b, 1.3, Some(-9.0));
        assert_eq!(ta.to_bits(), tb.to_bits());
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
        );
    }

    #[test]
    fn the_draw_walks_the_cumulative_weight() {
        let cands = [(7, 1.0f32), (3, 2.0), (9, 1.0)];
        assert_eq!(draw(&cands, 0.5), 7);
        assert_eq!(draw(&cands, 1.0), 7);
        assert_eq!(draw(&cands, 1.5), 3);
        assert_eq!(draw(&cands, 3.5), 9);
        assert_eq!(draw(&cands, 9.0), 9);
        assert_eq!(draw(&[], 0.3), 0);
    }
}
