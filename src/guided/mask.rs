//! Applying a grammar's token mask to a row of logits.

use super::TokenMask;

/// Sets every logit the mask does not allow to −∞. The row may be wider than the mask (the
/// model's output width often exceeds the tokenizer's vocabulary): the extra ids are never
/// text, so they are masked too.
pub fn apply_mask(logits: &mut [f32], mask: &TokenMask) {
    let n = mask.len().min(logits.len());
    for (id, l) in logits[..n].iter_mut().enumerate() {
        if !mask.is_allowed(id as u32) {
            *l = f32::NEG_INFINITY;
        }
    }
    for l in &mut logits[n..] {
        *l = f32::NEG_INFINITY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_ids_keep_their_logits_and_the_tail_is_masked() {
        let mut mask = TokenMask::alloc(5);
        mask.allow_token(1);
        mask.allow_token(3);
        let mut row = vec![0.5, 1.0, 2.0, 3.0, 4.0, 9.0, 9.0];
        apply_mask(&mut row, &mask);
        let inf = f32::NEG_INFINITY;
        assert_eq!(row, vec![inf, 1.0, inf, 3.0, inf, inf, inf]);
    }
}
