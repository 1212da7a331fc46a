//! Grammar-constrained decoding in the engine, on a random-weight fixture: each choice's
//! matcher must survive preemption (its tokens are recomputed, not re-sampled), n > 1 gives
//! every choice its own walk, EOS comes exactly where the grammar may end, and stop strings
//! and logprobs still work under a grammar. Masks are computed on the mask pool while the
//! forward pass runs, so these also cover that path at batch sizes of 1 to 48.

mod common;

use common::{assert_all_blocks_free, engine, load, prompts};
use indus::engine::{EngineConfig, EngineHandle, FinishReason, Request, SamplingParams};
use indus::guided::{CompiledGrammar, Constraint, GrammarCompiler};
use indus::scheduler::SchedulerConfig;
use std::sync::Arc;

const NAME: &str = "tiny-llama";

fn grammar(c: Constraint) -> Arc<CompiledGrammar> {
    let (_, tokenizer) = load(NAME);
    GrammarCompiler::new(&tokenizer, 8)
        .expect("compiler")
        .compile(&c)
        .expect("compiles")
}

fn sampled(seed: u64, n: usize, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        n,
        max_tokens,
        temperature: 1.0,
        seed: Some(seed),
        ..SamplingParams::greedy()
    }
}

fn config(num_blocks: usize, budget: usize) -> EngineConfig {
    EngineConfig {
        block_size: 4,
        num_blocks,
        max_model_len: 96,
        scheduler: SchedulerConfig {
            max_num_batched_tokens: budget,
            max_num_seqs: 64,
            enable_chunked_prefill: true,
        },
        guided_threads: 2,
        ..EngineConfig::default()
    }
}

/// (text, finish) of every choice of every request, all submitted at once.
fn run(
    h: &EngineHandle,
    g: &Arc<CompiledGrammar>,
    ps: &[Vec<u32>],
    n: usize,
    max_tokens: usize,
) -> Vec<Vec<(String, Option<FinishReason>)>> {
    let streams: Vec<_> = ps
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = Request::new(format!("g{i}"), p.clone(), sampled(i as u64, n, max_tokens));
            r.guided = Some(g.clone());
            h.submit(r).expect("submit")
        })
        .collect();
    streams
        .into_iter()
        .map(|s| {
            let out = s.blocking_collect().expect("completes");
            out.choices
                .iter()
                .map(|c| (c.text.clone(), c.finish_reason))
                .collect()
        })
        .collect()
}

/// `[a-z]{3}( [a-z]{3}){9}`: 39 characters, so every choice runs long enough to be preempted.
fn words(text: &str) -> bool {
    let ws: Vec<&str> = text.split(' ').collect();
    ws.len() == 10
        && ws
            .iter()
            .all(|w| w.len() == 3 && w.bytes().all(|b| b.is_ascii_lowercase()))
}

#[test]
fn matchers_survive_preemption_and_chunked_prefill() {
    let g = grammar(Constraint::Regex("[a-z]{3}( [a-z]{3}){9}".into()));
    let ps = prompts(&(0..16).map(|i| 1 + (i * 7) % 23).collect::<Vec<_>>(), 3);

    let roomy = engine(NAME, config(1024, 512));
    let want = run(&roomy, &g, &ps, 3, 64);
    for choices in &want {
        for (text, finish) in choices {
            assert!(words(text), "{text:?}");
            assert_eq!(*finish, Some(FinishReason::Stop), "{text:?}");
        }
    }
    assert!(
        want.iter().flatten().any(|c| c != &want[0][0]),
        "seeded choices must differ"
    );
    assert_all_blocks_free(&roomy);

    // 24 blocks (96 tokens) for 48 choices of up to 87 tokens: preemption and recompute.
    let tight = engine(NAME, config(24, 32));
    assert_eq!(run(&tight, &g, &ps, 3, 64), want, "under preemption");
    assert!(
        tight.stats().preemptions > 0,
        "the tight cache must preempt"
    );
    assert_all_blocks_free(&tight);
}

#[test]
fn eos_comes_exactly_where_the_grammar_may_end() {
    // May end after one, two or three "ab": every choice stops at one of them, by EOS.
    let g = grammar(Constraint::Regex("(ab){1,3}".into()));
    let h = engine(NAME, config(1024, 512));
    let got = run(&h, &g, &prompts(&[5, 9, 13, 2], 8), 8, 32);
    let mut ends = std::collections::HashSet::new();
    for (text, finish) in got.iter().flatten() {
        assert!(
            ["ab", "abab", "ababab"].contains(&text.as_str()),
            "{text:?}"
        );
        assert_eq!(*finish, Some(FinishReason::Stop), "{text:?}");
        ends.insert(text.clone());
    }
    assert!(
        ends.len() > 1,
        "temperature 1 must reach more than one end: {ends:?}"
    );

    // A grammar that cannot end before max_tokens: cut by length, still a prefix.
    let g = grammar(Constraint::Regex("[0-9]{200}".into()));
    for (text, finish) in run(&h, &g, &prompts(&[4], 1), 2, 10).iter().flatten() {
        assert_eq!(*finish, Some(FinishReason::Length), "{text:?}");
        assert!(
            !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
            "{text:?}"
        );
    }
    assert_all_blocks_free(&h);
}

#[test]
fn stop_strings_and_logprobs_work_under_a_grammar() {
    let h = engine(NAME, config(1024, 512));
    let (_, tokenizer) = load(NAME);
    let g = grammar(Constraint::Regex("[ab]{30}".into()));
    for seed in 0..6 {
        let mut params = sampled(seed, 1, 64);
        params.stop = vec!["bb".into()];
        params.logprobs = Some(2);
        let mut r = Request::new("s", prompts(&[6], seed).remove(0), params);
        r.guided = Some(g.clone());
        let out = h.submit(r).unwrap().blocking_collect().unwrap();
        let c = &out.choices[0];
        assert!(
            c.text.bytes().all(|b| b == b'a' || b == b'b'),
            "{:?}",
            c.text
        );
        assert!(!c.text.contains("bb"), "{:?}", c.text);
        if c.text.len() < 30 {
            assert_eq!(c.finish_reason, Some(FinishReason::Stop), "{:?}", c.text);
        }
        assert_eq!(c.logprobs.len(), c.token_ids.len());
        for (lp, &id) in c.logprobs.iter().zip(&c.token_ids) {
            assert_eq!(lp.token_id, id);
            assert!(lp.logprob.is_finite() && lp.logprob <= 0.0, "{lp:?}");
        }
        let text = tokenizer.decode(&c.token_ids, true).unwrap();
        assert!(text.starts_with(&c.text), "{text:?} vs {:?}", c.text);
    }
    assert_all_blocks_free(&h);
}
