//! Logits → token ids on the host: penalties, temperature, top-k, top-p, min-p, then a draw
//! from a per-sequence RNG (so a seeded request gives the same tokens whatever else is in the
//! batch). Logprobs come from the model's raw distribution, as OpenAI and vLLM report them.

use super::output::TokenLogprob;
use super::request::SamplingParams;
use crate::guided::{TokenMask, apply_mask};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The RNG of one choice: seeded from the request's seed and the choice index when given.
pub fn choice_rng(seed: Option<u64>, choice: usize, fallback: &mut impl Rng) -> ChaCha8Rng {
    use rand::SeedableRng;
    match seed {
        Some(s) => {
            ChaCha8Rng::seed_from_u64(s ^ (choice as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        }
        None => ChaCha8Rng::seed_from_u64(fallback.random()),
    }
}

/// What the sampler needs to know of a sequence's history.
pub struct History<'a> {
    pub prompt: &'a [u32],
    pub output: &'a [u32],
}

/// Applies the penalties in place; returns the raw logits it overwrote, so logprobs can still
/// be reported from the model's own distribution without copying the whole row.
fn apply_penalties(logits: &mut [f32], p: &SamplingParams, h: &History<'_>) -> Vec<(u32, f32)> {
    let mut originals: Vec<(u32, f32)> = Vec::new();
    let mut remember = |t: u32, l: f32| {
        if !originals.iter().any(|o| o.0 == t) {
            originals.push((t, l));
        }
    };
    if p.repetition_penalty != 1.0 {
        let mut seen = std::collections::HashSet::new();
        for &t in h.prompt.iter().chain(h.output) {
            if seen.insert(t)
                && let Some(l) = logits.get_mut(t as usize)
            {
                remember(t, *l);
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        for &t in h.output {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                remember(t, *l);
                *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
            }
        }
    }
    originals
}

fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in xs.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// `k` largest (id, value) pairs, largest first, ties to the lower id. One pass with a
/// k-sized buffer: for the small k of logprobs and top-k sampling most elements are rejected
/// by a single comparison.
pub fn top_k_of(xs: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(xs.len());
    if k == 0 {
        return Vec::new();
    }
    // Ascending by (value, Reverse(id)): the buffer's first entry is the one to evict.
    let better = |a: (u32, f32), b: (u32, f32)| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0);
    let mut buf: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &v) in xs.iter().enumerate() {
        let item = (i as u32, v);
        if buf.len() == k && !better(item, buf[0]) {
            continue;
        }
        let pos = buf.partition_point(|&b| better(item, b));
        buf.insert(pos, item);
        if buf.len() > k {
            buf.remove(0);
        }
    }
    buf.reverse();
    buf
}

fn logsumexp(xs: &[f32]) -> f32 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + xs.iter().map(|&x| (x - max).exp()).sum::<f32>().ln()
}

/// Samples one token from a row of logits. `logits` is scratch: it is modified.
pub fn sample(
    logits: &mut [f32],
    params: &SamplingParams,
    history: &History<'_>,
    allowed: Option<&TokenMask>,
    rng: &mut ChaCha8Rng,
) -> (u32, Option<TokenLogprob>) {
    // Raw distribution for logprobs, before any processing.
    let raw_logprobs = params.logprobs.map(|k| {
        let lse = logsumexp(logits);
        let top = top_k_of(logits, k)
            .into_iter()
            .map(|(t, l)| (t, l - lse))
            .collect::<Vec<_>>();
        (lse, top)
    });
    if let Some(mask) = allowed {
        apply_mask(logits, mask);
    }
    let originals = apply_penalties(logits, params, history);
    let token = if params.is_greedy() {
        argmax(logits)
    } else {
        sample_random(logits, params, rng)
    };
    let lp = raw_logprobs.map(|(lse, top)| TokenLogprob {
        token_id: token,
        logprob: originals
            .iter()
            .find(|o| o.0 == token)
            .map_or(logits[token as usize], |o| o.1)
            - lse,
        top,
    });
    (token, lp)
}

/// Sorts (descending) a prefix of `cands` long enough to hold `mass`: doubling a partial
/// selection instead of sorting a 128k vocabulary, since the nucleus is usually small.
fn sort_prefix_reaching(cands: &mut [(u32, f32)], mass: f32) {
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut k = 64.min(cands.len());
    loop {
        if k < cands.len() {
            cands.select_nth_unstable_by(k - 1, cmp);
        }
        cands[..k].sort_unstable_by(cmp);
        if k == cands.len() || cands[..k].iter().map(|c| c.1).sum::<f32>() >= mass {
            return;
        }
        k = (k * 4).min(cands.len());
    }
}

fn sample_random(logits: &mut [f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> u32 {
    let inv_t = 1.0 / p.temperature;
    // Candidates: all tokens, or the top-k. Sorted descending only when top-p needs it.
    let mut cands: Vec<(u32, f32)> = if p.top_k > 0 && p.top_k < logits.len() {
        top_k_of(logits, p.top_k)
    } else {
        indus_kernels::candidate_weights::all_candidates(logits)
    };
    // min-p in the log domain and the one exp both samplers use (kernels/src/fma_exp.rs), so
    // seeded sampling picks the same token on CPU and GPU.
    let ln_min_p = (p.min_p > 0.0).then(|| p.min_p.ln());
    let mut total =
        indus_kernels::candidate_weights::candidate_weights(&mut cands, inv_t, ln_min_p);
    if p.top_p < 1.0 {
        sort_prefix_reaching(&mut cands, p.top_p * total);
        let limit = p.top_p * total;
        let mut acc = 0f32;
        let mut keep = cands.len();
        for (i, c) in cands.iter().enumerate() {
            acc += c.1;
            if acc >= limit {
                keep = i + 1;
                break;
            }
        }
        cands.truncate(keep);
        total = cands.iter().map(|c| c.1).sum();
    }
    indus_kernels::candidate_weights::draw(&cands, rng.random::<f32>() * total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn no_history() -> History<'static> {
        History {
            prompt: &[],
            output: &[],
        }
    }

    #[test]
    fn a_mask_leaves_only_allowed_tokens_but_logprobs_stay_raw() {
        let mut mask = TokenMask::alloc(4);
        mask.allow_token(2);
        let base = vec![5.0, 1.0, 0.5, 3.0];
        for temperature in [0.0, 1.0] {
            let p = SamplingParams {
                temperature,
                logprobs: Some(1),
                ..Default::default()
            };
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let (t, lp) = sample(&mut base.clone(), &p, &no_history(), Some(&mask), &mut rng);
            assert_eq!(t, 2);
            let lp = lp.unwrap();
            let lse = logsumexp(&base);
            assert!((lp.logprob - (0.5 - lse)).abs() < 1e-6);
            assert_eq!(lp.top[0].0, 0, "top alternatives come from the raw row");
        }
    }

    #[test]
    fn greedy_takes_argmax_and_reports_logprobs() {
        let mut l = vec![0.0, 3.0, 1.0, 2.0];
        let p = SamplingParams {
            logprobs: Some(2),
            ..SamplingParams::greedy()
        };
        let (t, lp) = sample(
            &mut l,
            &p,
            &no_history(),
            None,
            &mut ChaCha8Rng::seed_from_u64(0),
        );
        assert_eq!(t, 1);
        let lp = lp.unwrap();
        let lse = (0f32.exp() + 3f32.exp() + 1f32.exp() + 2f32.exp()).ln();
        assert!((lp.logprob - (3.0 - lse)).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_is_reproducible() {
        let base: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        let p = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        let (t, _) = sample(
            &mut base.clone(),
            &p,
            &no_history(),
            None,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(t, argmax(&base));
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            ..Default::default()
        };
        let draw = |seed| {
            let mut rng = choice_rng(Some(seed), 0, &mut rand::rng());
            (0..20)
                .map(|_| sample(&mut base.clone(), &p, &no_history(), None, &mut rng).0)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn top_k_of_matches_a_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for k in [1, 2, 5, 20, 100] {
            // Coarse values so ties occur.
            let xs: Vec<f32> = (0..500)
                .map(|_| (rng.random_range(0..50) as f32) / 4.0)
                .collect();
            let mut all: Vec<(u32, f32)> =
                xs.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            all.truncate(k);
            assert_eq!(top_k_of(&xs, k), all, "k = {k}");
        }
    }

    #[test]
    fn penalties_change_the_choice() {
        let mut l = vec![1.0, 0.9];
        let p = SamplingParams {
            presence_penalty: 0.5,
            ..SamplingParams::greedy()
        };
        let h = History {
            prompt: &[],
            output: &[0],
        };
        assert_eq!(
            sample(&mut l, &p, &h, None, &mut ChaCha8Rng::seed_from_u64(0)).0,
            1
        );
        let mut l = vec![1.0, 0.9];
        let p = SamplingParams {
            repetition_penalty: 1.2,
            ..SamplingParams::greedy()
        };
        let h = History {
            prompt: &[0],
            output: &[],
        };
        assert_eq!(
            sample(&mut l, &p, &h, None, &mut ChaCha8Rng::seed_from_u64(0)).0,
            1
        );
    }

    #[test]
    fn min_p_and_top_p_exclude_unlikely_tokens() {
        let p = SamplingParams {
            min_p: 0.5,
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..200 {
            let mut l = vec![5.0, 4.9, -5.0, -6.0];
            let (t, _) = sample(&mut l, &p, &no_history(), None, &mut rng);
            assert!(t < 2);
        }
        let p = SamplingParams {
            top_p: 0.5,
            ..Default::default()
        };
        for _ in 0..200 {
            let mut l = vec![0.0, 5.0, 0.0, 0.0];
            assert_eq!(sample(&mut l, &p, &no_history(), None, &mut rng).0, 1);
        }
    }
}
