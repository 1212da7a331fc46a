//! Continuous batching must not change results: every request produces exactly the tokens it
//! produces alone, whatever it is batched with, however small the cache (preemption) or the
//! step budget (chunked prefill), and with prefix-cache hits. KV blocks always return.

mod common;

use common::{assert_all_blocks_free, engine, greedy, prompts, run_alone};
use indus::engine::{EngineConfig, EngineHandle, FinishReason, Request, SamplingParams};
use indus::scheduler::SchedulerConfig;

const N: usize = 32;
const MAX_TOKENS: usize = 12;

fn lengths() -> Vec<usize> {
    (0..N).map(|i| 1 + (i * 13) % 47).collect()
}

/// Reference: each prompt alone on a roomy engine.
fn alone(name: &str, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let h = engine(name, EngineConfig::default());
    prompts
        .iter()
        .map(|p| run_alone(&h, p, greedy(MAX_TOKENS)))
        .collect()
}

/// All prompts submitted at once; returns each one's tokens.
fn concurrent(h: &EngineHandle, prompts: &[Vec<u32>]) -> Vec<Vec<u32>> {
    let streams: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            h.submit(Request::new(format!("r{i}"), p.clone(), greedy(MAX_TOKENS)))
                .unwrap()
        })
        .collect();
    streams
        .into_iter()
        .map(|s| {
            let out = s.blocking_collect().unwrap();
            assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Length));
            out.choices[0].token_ids.clone()
        })
        .collect()
}

fn config(num_blocks: usize, budget: usize, max_seqs: usize) -> EngineConfig {
    EngineConfig {
        block_size: 4,
        num_blocks,
        max_model_len: 64,
        scheduler: SchedulerConfig {
            max_num_batched_tokens: budget,
            max_num_seqs: max_seqs,
            enable_chunked_prefill: true,
        },
        ..EngineConfig::default()
    }
}

#[test]
fn concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-llama");
}

#[test]
fn qwen3_concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-qwen3");
}

/// Gemma 3's windows (8 tokens) are shorter than most prompts here, so sliding layers see
/// a cut context through preemption, chunked prefill and scattered blocks.
/// Gemma 2's soft-capped scores and alternating windows under the same pressure.
#[test]
fn gemma2_concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-gemma2");
}

#[test]
fn gemma3_concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-gemma3");
}

/// Phi-3's fused projections, LongRoPE and partial rotary under the same pressure.
#[test]
fn phi3_concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-phi3");
}

/// Mixture-of-experts routing is per token: batching, preemption and chunking must not
/// change which experts a token meets.
#[test]
fn mixtral_concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-mixtral");
}

#[test]
fn qwen2_moe_concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-qwen2-moe");
}

#[test]
fn qwen3_moe_concurrent_requests_match_solo_runs_under_pressure() {
    pressure("tiny-qwen3-moe");
}

/// Roomy cache, preempting cache, chunked prefill and both at once: every request's tokens
/// equal its solo run's.
fn pressure(name: &str) {
    let ps = prompts(&lengths(), 11);
    let want = alone(name, &ps);
    assert!(
        want.iter().any(|t| t != &want[0]),
        "fixture must not be degenerate"
    );

    // Plenty of room.
    let h = engine(name, config(1024, 512, 64));
    assert_eq!(concurrent(&h, &ps), want, "roomy cache");
    assert_all_blocks_free(&h);

    // A cache of 24 blocks (96 tokens) for 32 requests of up to 59 tokens: preemption.
    let h = engine(name, config(24, 512, 64));
    assert_eq!(concurrent(&h, &ps), want, "tiny cache");
    assert!(h.stats().preemptions > 0, "the tiny cache must preempt");
    assert_all_blocks_free(&h);

    // A step budget of 7 tokens: every prompt longer than that is prefilled in chunks.
    let h = engine(name, config(1024, 7, 64));
    assert_eq!(concurrent(&h, &ps), want, "chunked prefill");
    assert_all_blocks_free(&h);

    // Both at once, and few sequences per step.
    let h = engine(name, config(20, 5, 6));
    assert_eq!(concurrent(&h, &ps), want, "tiny cache + tiny budget");
    assert_all_blocks_free(&h);
}

#[test]
fn shared_prefixes_hit_the_cache_without_changing_outputs() {
    let name = "tiny-qwen2";
    let prefix = prompts(&[24], 5).remove(0);
    let ps: Vec<Vec<u32>> = prompts(&lengths(), 13)
        .into_iter()
        .map(|suffix| [prefix.clone(), suffix].concat())
        .collect();
    let want = alone(name, &ps);
    let mut cfg = config(512, 64, 64);
    cfg.max_model_len = 96;
    let h = engine(name, cfg);
    // A first request warms the cache, then all at once.
    run_alone(&h, &ps[0], greedy(MAX_TOKENS));
    assert_eq!(concurrent(&h, &ps), want);
    let s = h.stats();
    assert!(s.prefix_hits > 0, "expected prefix-cache hits: {s:?}");
    assert!(
        s.prefix_hits >= (N as u64) * 20,
        "each request reuses the 24-token prefix: {s:?}"
    );
    assert_all_blocks_free(&h);
}

#[test]
fn n_choices_share_the_prompt_and_seeded_sampling_is_reproducible() {
    let h = engine("tiny-llama3", config(256, 64, 16));
    let prompt = prompts(&[19], 3).remove(0);
    let params = SamplingParams {
        n: 3,
        max_tokens: 10,
        temperature: 1.0,
        top_p: 0.95,
        seed: Some(1234),
        ignore_eos: true,
        ..SamplingParams::default()
    };
    let run = || {
        h.submit(Request::new("n3", prompt.clone(), params.clone()))
            .unwrap()
            .blocking_collect()
            .unwrap()
    };
    let a = run();
    let b = run();
    assert_eq!(a.choices.len(), 3);
    for c in &a.choices {
        assert_eq!(c.token_ids.len(), 10);
    }
    let tokens: Vec<_> = a.choices.iter().map(|c| c.token_ids.clone()).collect();
    assert_eq!(
        tokens,
        b.choices
            .iter()
            .map(|c| c.token_ids.clone())
            .collect::<Vec<_>>()
    );
    assert_ne!(tokens[0], tokens[1], "choices draw from different streams");
    assert_all_blocks_free(&h);

    // Same seed, same tokens, even when batched with other traffic.
    let noise: Vec<_> = prompts(&[30, 7, 22], 9)
        .into_iter()
        .map(|p| h.submit(Request::new("noise", p, greedy(8))).unwrap())
        .collect();
    let c = run();
    for s in noise {
        s.blocking_collect().unwrap();
    }
    assert_eq!(
        tokens,
        c.choices
            .iter()
            .map(|c| c.token_ids.clone())
            .collect::<Vec<_>>()
    );
    assert_all_blocks_free(&h);
}

/// A dropped stream aborts its request: the engine stops generating for it and frees its
/// blocks. The request asks for 2000 tokens, so however late the engine thread notices the
/// drop on a loaded machine it is still far from done; it must stop within 1000 steps.
#[test]
fn dropping_a_stream_aborts_and_frees_blocks() {
    const MAX_TOKENS: usize = 2000;
    let cfg = EngineConfig {
        max_model_len: 2048,
        ..config(600, 64, 8)
    };
    let h = engine("tiny-llama", cfg);
    let total = h.stats().total_blocks;
    let mut stream = h
        .submit(Request::new(
            "drop-me",
            prompts(&[20], 1).remove(0),
            greedy(MAX_TOKENS),
        ))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.token_ids.len(), 1);
    });
    drop(stream);
    assert_all_blocks_free(&h);
    assert_eq!(h.stats().total_blocks, total);
    // Run to the end it would have taken 2000 steps.
    let steps = h.stats().steps;
    assert!(
        steps < 1000,
        "request was not aborted ({steps} steps): {:?}",
        h.stats()
    );
    eprintln!("aborted after {steps} engine steps (of {MAX_TOKENS})");
}

#[test]
fn stop_tokens_and_strings_finish_with_stop() {
    let name = "tiny-llama";
    let h = engine(name, config(256, 64, 8));
    let prompt = prompts(&[9], 21).remove(0);
    let free_run = run_alone(&h, &prompt, greedy(12));
    // Stop at the 5th token by id.
    let params = SamplingParams {
        stop_token_ids: vec![free_run[4]],
        ..greedy(12)
    };
    let out = h
        .submit(Request::new("stop-id", prompt.clone(), params))
        .unwrap()
        .blocking_collect()
        .unwrap();
    let first = free_run.iter().position(|&t| t == free_run[4]).unwrap();
    assert_eq!(out.choices[0].token_ids, free_run[..=first].to_vec());
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Stop));

    // Stop on a piece of the text the free run produces: output ends right before it.
    let full = h
        .submit(Request::new("text", prompt.clone(), greedy(12)))
        .unwrap()
        .blocking_collect()
        .unwrap()
        .choices[0]
        .text
        .clone();
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ..greedy(12)
    };
    let out = h
        .submit(Request::new("stop-str", prompt, params))
        .unwrap()
        .blocking_collect()
        .unwrap();
    let cut = full.find(&stop).unwrap();
    assert_eq!(out.choices[0].text, full[..cut]);
    assert_eq!(out.choices[0].finish_reason, Some(FinishReason::Stop));
    assert_all_blocks_free(&h);
}

#[test]
fn invalid_requests_are_refused_clearly() {
    let h = engine("tiny-llama", config(64, 64, 8));
    let err = h
        .submit(Request::new("long", vec![5; 60], greedy(10)))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("maximum context length is 64"),
        "{err}"
    );
    let err = h
        .submit(Request::new("vocab", vec![40_000], greedy(1)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let err = h
        .submit(Request::new("empty", vec![], greedy(1)))
        .err()
        .unwrap();
    assert!(err.to_string().contains("empty"), "{err}");
    let bad = SamplingParams {
        temperature: 3.0,
        ..greedy(1)
    };
    assert!(h.submit(Request::new("t", vec![5], bad)).is_err());
    // The engine still serves.
    assert_eq!(run_alone(&h, &[5, 6, 7], greedy(3)).len(), 3);
}

#[test]
fn an_engine_panic_fails_every_request_and_refuses_new_ones() {
    let mut cfg = config(256, 64, 8);
    cfg.fault_panic_at_step = Some(3);
    let h = engine("tiny-llama", cfg);
    let streams: Vec<_> = prompts(&[5, 9], 2)
        .into_iter()
        .map(|p| h.submit(Request::new("doomed", p, greedy(20))).unwrap())
        .collect();
    for s in streams {
        let err = s.blocking_collect().unwrap_err();
        assert!(
            matches!(err, indus::engine::EngineError::Internal(_)),
            "{err:?}"
        );
    }
    assert!(!h.is_alive());
    let err = h.submit(Request::new("late", vec![5, 6], greedy(2))).err();
    assert_eq!(err, Some(indus::engine::EngineError::NotRunning));
}
