//! Helpers shared by the engine integration tests: fixture models and engines built on them.
#![allow(dead_code)]

use candle_core::{DType, Device};
use indus::engine::{Engine, EngineConfig, EngineHandle, Request, SamplingParams};
use indus::tokenizer::Tokenizer;
use indus_models::{CausalLm, LoadFormat, LoadOptions, ModelFiles};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const FIXTURES: [&str; 10] = [
    "tiny-llama",
    "tiny-llama3",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-phi3",
    "tiny-mixtral",
    "tiny-qwen2-moe",
    "tiny-qwen3-moe",
];

pub fn fixture_dir(name: &str) -> PathBuf {
    indus::loader::repo_fixture(name)
}

pub fn load(name: &str) -> (CausalLm, Arc<Tokenizer>) {
    let files = ModelFiles::from_dir(&fixture_dir(name), true).expect("fixture files");
    let model = CausalLm::load(
        &files,
        &LoadOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            format: LoadFormat::Auto,
            seed: 0,
            dequantize: false,
        },
    )
    .expect("fixture loads");
    let tokenizer = Tokenizer::from_files(
        files.tokenizer.as_ref().expect("fixture tokenizer"),
        files.tokenizer_config.as_deref(),
        files.generation_config.as_deref(),
        &model.config().eos_token_ids,
        None,
    )
    .expect("tokenizer loads");
    (model, Arc::new(tokenizer))
}

pub fn engine(name: &str, config: EngineConfig) -> EngineHandle {
    let (model, tokenizer) = load(name);
    EngineHandle::spawn(Engine::new(model, tokenizer, config).expect("engine")).expect("spawn")
}

/// Deterministic pseudo-random prompts (token ids 3..32000) of the given lengths.
pub fn prompts(lengths: &[usize], seed: u64) -> Vec<Vec<u32>> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    lengths
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    3 + ((state >> 33) % 31_997) as u32
                })
                .collect()
        })
        .collect()
}

pub fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ignore_eos: true,
        ..SamplingParams::greedy()
    }
}

/// Runs one request to completion and returns choice 0's tokens.
pub fn run_alone(handle: &EngineHandle, prompt: &[u32], params: SamplingParams) -> Vec<u32> {
    handle
        .submit(Request::new("alone", prompt.to_vec(), params))
        .expect("submit")
        .blocking_collect()
        .expect("completes")
        .choices[0]
        .token_ids
        .clone()
}

/// Waits (up to 30 s: a loaded machine) until the engine reports every KV block free (stats
/// are published after each step).
pub fn assert_all_blocks_free(handle: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = handle.stats();
        if s.total_blocks > 0 && s.free_blocks == s.total_blocks && s.running == 0 && s.waiting == 0
        {
            return;
        }
        if Instant::now() > deadline {
            panic!("KV blocks not all returned: {s:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Logits of every position of `tokens` (one sequence, prefilled in one step): `[len, vocab]`.
pub fn prompt_logits(model: &CausalLm, tokens: &[u32]) -> candle_core::Tensor {
    use candle_core::Tensor;
    use indus_kernels::AttentionMetadata;
    use indus_kernels::metadata::HostAttentionMetadata;
    let block_size = 16;
    let blocks = tokens.len().div_ceil(block_size);
    let cache = model.new_kv_cache(blocks, block_size).expect("kv cache");
    let mut host = HostAttentionMetadata {
        max_blocks_per_seq: blocks,
        ..Default::default()
    };
    host.query_start_loc = vec![0, tokens.len() as u32];
    host.context_lens = vec![tokens.len() as u32];
    host.block_tables = (0..blocks as u32).collect();
    host.slot_mapping = (0..tokens.len() as i64).collect();
    let dev = model.device().clone();
    let attention = AttentionMetadata::new(host, &dev).expect("metadata");
    let pos: Vec<u32> = (0..tokens.len() as u32).collect();
    model
        .forward(
            &indus_models::StepInput {
                input_ids: &Tensor::new(tokens, &dev).expect("ids"),
                positions: &Tensor::new(pos.as_slice(), &dev).expect("positions"),
                attention: &attention,
                logits_indices: &Tensor::new(pos.as_slice(), &dev).expect("indices"),
            },
            &cache,
        )
        .expect("forward")
}

/// Largest |a − b| of a row over the largest |b| of that row, worst row: the relative error
/// the GGUF goldens are held to.
pub fn worst_row_relative_error(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let a = a.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
    let b = b.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
    a.iter()
        .zip(&b)
        .map(|(ra, rb)| {
            let diff = ra
                .iter()
                .zip(rb)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            let scale = rb.iter().map(|y| y.abs()).fold(0f32, f32::max).max(1e-6);
            diff / scale
        })
        .fold(0f32, f32::max)
}

/// Token ids stored as an integer tensor of any shape (the goldens keep them as i64).
pub fn tensor_ids(t: &candle_core::Tensor) -> Vec<u32> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

/// ‖a − b‖ / ‖b‖ over all elements.
pub fn relative_l2(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let sq = |t: &candle_core::Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    (sq(&(a - b).unwrap()) / sq(b)).sqrt()
}

/// How many of the 1000 strings of tests/fixtures/smollm2/tokenizer_golden.json `tok`
/// encodes (without special tokens) differently from SmolLM2's reference tokenizer; each
/// difference is printed.
pub fn smollm2_golden_differences(tok: &Tokenizer) -> usize {
    let text = std::fs::read_to_string(fixture_dir("smollm2/tokenizer_golden.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 1000);
    let mut differ = 0;
    for c in cases {
        let s = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(s, false).unwrap();
        if got != want {
            differ += 1;
            eprintln!("differs: {s:?}\n  ours {got:?}\n  want {want:?}");
        }
    }
    differ
}

/// A JSON array of numbers as f32 (goldens).
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("a JSON array")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub const SMOLLM2_VAR: &str = "INDUS_TEST_SMOLLM2_GGUF";
const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// SmolLM2-135M-Instruct Q4_1 from INDUS_TEST_SMOLLM2_GGUF: `None` (said so) when unset, a
/// failure when set but missing or not the pinned file.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let Some(p) = std::env::var_os(SMOLLM2_VAR) else {
        println!(
            "{SMOLLM2_VAR} is not set: skipping (scripts/fetch-test-models.sh installs the model)"
        );
        return None;
    };
    let p = PathBuf::from(p);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{SMOLLM2_VAR}={}: {e}", p.display()));
    use sha2::Digest;
    let got = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(
        got,
        SMOLLM2_SHA256,
        "{SMOLLM2_VAR}={} is not the pinned file",
        p.display()
    );
    Some(p)
}
