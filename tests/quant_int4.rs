//! Int4 weight-only checkpoints (GPTQ, AWQ) end to end on the CPU: the tiny fixtures of
//! scripts/make_quant_fixtures.py load packed, and their logits and greedy tokens match the
//! same model made dense from `dequantized.safetensors` (the dense weights the script
//! computed from its integers, not from the packed bytes).

mod common;
mod common_server;

use candle_core::{DType, Device};
use common::{fixture_dir, greedy, prompt_logits, prompts, relative_l2, run_alone};
use common_server::TestServer;
use indus::engine::{Engine, EngineConfig, EngineHandle};
use indus::tokenizer::Tokenizer;
use indus_models::{CausalLm, LoadFormat, LoadOptions, ModelConfig, ModelFiles, QuantConfig};
use std::sync::Arc;

const FIXTURES: [(&str, &str); 2] = [
    ("tiny-llama-gptq", "gptq-int4-g32"),
    ("tiny-llama-awq", "awq-int4-g32"),
];

fn opts(dequantize: bool) -> LoadOptions {
    LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        format: LoadFormat::Auto,
        seed: 0,
        dequantize,
    }
}

/// The fixture as a dense model: its unquantized tensors from model.safetensors, the
/// quantized layers' dense weights from dequantized.safetensors.
fn reference(name: &str) -> CausalLm {
    let dir = fixture_dir(name);
    let config = ModelConfig::from_file(&dir.join("config.json")).expect("config");
    CausalLm::load_with_quantization(
        config,
        None,
        &[
            dir.join("model.safetensors"),
            dir.join("dequantized.safetensors"),
        ],
        &opts(false),
    )
    .expect("dense reference loads")
}

fn packed(name: &str, dequantize: bool) -> CausalLm {
    let files = ModelFiles::from_dir(&fixture_dir(name), true).expect("files");
    CausalLm::load(&files, &opts(dequantize)).expect("quantized fixture loads")
}

fn engine(model: CausalLm, name: &str) -> EngineHandle {
    let files = ModelFiles::from_dir(&fixture_dir(name), true).expect("files");
    let tokenizer = Tokenizer::from_files(
        files.tokenizer.as_ref().expect("tokenizer"),
        files.tokenizer_config.as_deref(),
        files.generation_config.as_deref(),
        &model.config().eos_token_ids,
        None,
    )
    .expect("tokenizer");
    EngineHandle::spawn(
        Engine::new(model, Arc::new(tokenizer), EngineConfig::default()).expect("engine"),
    )
    .expect("spawn")
}

#[test]
fn packed_layers_are_kept_and_reported() {
    for (name, label) in FIXTURES {
        let q = packed(name, false);
        assert_eq!(q.quantization().as_deref(), Some(label), "{name}");
        let dense = packed(name, true);
        assert!(dense.quantization().is_none(), "{name}");
        // Packed layers take ~1/7 of their f32 bytes (embeddings, lm_head, AWQ down_proj dense).
        let saved = dense.weight_bytes() - q.weight_bytes();
        assert!(saved > 200_000, "{name}: {saved}");
    }
}

#[test]
fn logits_match_the_dequantized_reference() {
    for (name, _) in FIXTURES {
        let q = packed(name, false);
        let via_loader = packed(name, true);
        let r = reference(name);
        for (i, p) in prompts(&[1, 7, 23], 4).iter().enumerate() {
            let (lq, ld, lr) = (
                prompt_logits(&q, p),
                prompt_logits(&via_loader, p),
                prompt_logits(&r, p),
            );
            let err = relative_l2(&lq, &lr);
            let err_dense = relative_l2(&ld, &lr);
            eprintln!(
                "{name} prompt {i} ({} tokens): rel L2 packed {err:.2e}, --dequantize {err_dense:.2e}",
                p.len()
            );
            assert!(err < 1e-2, "{name} prompt {i}: {err}");
            assert!(err_dense < 1e-4, "{name} prompt {i}: {err_dense}");
        }
    }
}

#[test]
fn quantization_error_against_the_original_model_is_small() {
    // Round-to-nearest int4 of the random bf16 tiny-llama: near, not equal.
    let original = common::load("tiny-llama").0;
    for (name, _) in FIXTURES {
        let q = packed(name, false);
        let p = &prompts(&[16], 9)[0];
        let err = relative_l2(&prompt_logits(&q, p), &prompt_logits(&original, p));
        eprintln!("{name}: rel L2 vs unquantized tiny-llama {err:.3}");
        assert!(err < 0.5, "{name}: {err}");
    }
}

#[test]
fn greedy_output_matches_the_dequantized_reference() {
    for (name, _) in FIXTURES {
        let q = engine(packed(name, false), name);
        let r = engine(reference(name), name);
        for p in prompts(&[3, 12, 30], 6) {
            let a = run_alone(&q, &p, greedy(12));
            let b = run_alone(&r, &p, greedy(12));
            assert_eq!(a.len(), 12);
            assert_eq!(a, b, "{name}");
        }
        common::assert_all_blocks_free(&q);
    }
}

#[test]
fn config_detection_and_clear_errors() {
    let dir = fixture_dir("tiny-llama-gptq");
    let q = match QuantConfig::from_config_file(&dir.join("config.json"))
        .expect("parses")
        .expect("quantized")
    {
        QuantConfig::Int4(q) => q,
        other => panic!("not int4: {other:?}"),
    };
    assert!(q.desc_act && !q.sym);
    assert_eq!(q.group_size, Some(32));
    // Packed tensors without a quantization_config: an error naming the layer, no panic.
    let config = ModelConfig::from_file(&dir.join("config.json")).expect("config");
    let err = CausalLm::load_with_quantization(
        config,
        None,
        &[dir.join("model.safetensors")],
        &opts(false),
    )
    .err()
    .expect("fails");
    let msg = err.to_string();
    assert!(
        msg.contains("qweight") && msg.contains("quantization_config"),
        "{msg}"
    );
    // 8-bit: not supported, the key named.
    let tmp = std::env::temp_dir().join(format!("indus-quant-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        text.replace("\"bits\": 4", "\"bits\": 8"),
    )
    .unwrap();
    let msg = QuantConfig::from_config_file(&tmp.join("config.json"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("quantization_config.bits = 8"), "{msg}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[tokio::test]
async fn serve_reports_the_quantization_in_v1_models() {
    let server = TestServer::start_model(&fixture_dir("tiny-llama-gptq"), &[], &[]);
    let models: serde_json::Value = reqwest::get(server.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        models["data"][0]["quantization"], "gptq-int4-g32",
        "{models}"
    );
    let (status, _, body) = common_server::post_json(
        &server.url("/v1/completions"),
        &serde_json::json!({"model": common_server::MODEL_NAME, "prompt": "hello", "max_tokens": 4}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn serve_rejects_a_mismatched_quantization_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_indus"))
        .args(["serve", "--quantization", "awq", "--port", "0"])
        .arg(fixture_dir("tiny-llama-gptq"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--quantization awq does not match"), "{err}");
}
