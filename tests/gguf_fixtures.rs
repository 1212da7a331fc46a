//! The committed GGUF fixtures (tests/fixtures/gguf, written by llama.cpp's converter and
//! `llama-quantize`) against transformers' goldens of the same files: config from metadata,
//! Q/K un-permutation, rope_freqs, the fused-projection join of mixed types, both tokenizer
//! kinds, weights kept quantized, and the mixture-of-experts (Mixtral, Qwen2-MoE with its
//! shared expert, Qwen3-MoE) and Gemma 2 files.

mod common;

use candle_core::{DType, Device, Tensor};
use indus::engine::{Engine, EngineConfig, EngineHandle};
use indus::tokenizer::Tokenizer;
use indus_models::gguf::GgufFile;
use indus_models::{CausalLm, LoadFormat, LoadOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

const FILES: [&str; 10] = [
    "tiny-llama3.f16",
    "tiny-llama3.q8_0",
    "tiny-llama3.Q4_K_M",
    "tiny-qwen2.q8_0",
    "tiny-qwen3.q8_0",
    "tiny-smollm2-tok.q8_0",
    "tiny-mixtral.q8_0",
    "tiny-qwen2-moe.q8_0",
    "tiny-qwen3-moe.q8_0",
    "tiny-gemma2.q8_0",
];

fn path(name: &str) -> PathBuf {
    common::fixture_dir("gguf").join(format!("{name}.gguf"))
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        common::fixture_dir("gguf").join(format!("{name}.golden.safetensors")),
        &Device::Cpu,
    )
    .expect("golden")
}

fn load(name: &str, dequantize: bool) -> (CausalLm, Tokenizer) {
    let file = Arc::new(GgufFile::open(&path(name)).expect("opens"));
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        format: LoadFormat::Gguf,
        seed: 0,
        dequantize,
    };
    let model = CausalLm::load_gguf(file.clone(), &opts).expect("loads");
    let tok = indus::tokenizer::gguf::from_gguf(&file, None).expect("tokenizer");
    (model, tok)
}

const PROMPTS: [&str; 3] = [
    "The quick brown fox jumps over the lazy dog.",
    "پاکستان ایک خوبصورت ملک ہے",
    "你好，世界 🌍🚀",
];

#[test]
fn dequantized_logits_and_greedy_tokens_match_transformers() {
    for name in FILES {
        let g = golden(name);
        let (model, tok) = load(name, true);
        let model_tokens = model.config().vocab_size;
        let mut handle_model = Some((model, Arc::new(tok)));
        for (i, text) in PROMPTS.iter().enumerate() {
            let want_ids = common::tensor_ids(&g[&format!("input_ids_{i}")]);
            let (model, tok) = handle_model.as_ref().unwrap();
            assert_eq!(
                tok.encode(text, true).unwrap(),
                want_ids,
                "{name} prompt {i} ids"
            );
            let logits = common::prompt_logits(model, &want_ids);
            let head = logits.narrow(1, 0, 512.min(model_tokens)).unwrap();
            let err = common::worst_row_relative_error(&head, &g[&format!("all_logits_head_{i}")]);
            let last = logits.narrow(0, want_ids.len() - 1, 1).unwrap();
            let want_last = g[&format!("last_logits_{i}")].unsqueeze(0).unwrap();
            let err_last = common::worst_row_relative_error(&last, &want_last);
            println!(
                "{name} prompt {i}: relative logit error {err:.2e} (every position, ids 0..512), {err_last:.2e} (last position, whole vocabulary)"
            );
            assert!(
                err < 1e-3 && err_last < 1e-3,
                "{name} prompt {i}: {err} {err_last}"
            );
        }
        // Greedy through the engine (paged KV, decode steps), EOS stopping off.
        let (model, tok) = handle_model.take().unwrap();
        let engine =
            EngineHandle::spawn(Engine::new(model, tok, EngineConfig::default()).unwrap()).unwrap();
        for i in 0..PROMPTS.len() {
            let want = common::tensor_ids(&g[&format!("greedy_{i}")]);
            let got = common::run_alone(
                &engine,
                &common::tensor_ids(&g[&format!("input_ids_{i}")]),
                common::greedy(want.len()),
            );
            assert_eq!(got, want, "{name} prompt {i} greedy");
        }
    }
}

#[test]
fn quantized_weights_stay_quantized_and_track_the_golden() {
    for name in [
        "tiny-llama3.q8_0",
        "tiny-llama3.Q4_K_M",
        "tiny-qwen2.q8_0",
        "tiny-qwen3.q8_0",
        "tiny-smollm2-tok.q8_0",
        "tiny-mixtral.q8_0",
        "tiny-qwen2-moe.q8_0",
        "tiny-qwen3-moe.q8_0",
        "tiny-gemma2.q8_0",
    ] {
        let g = golden(name);
        let (quant, _) = load(name, false);
        let (dense, _) = load(name, true);
        let q = quant.quantization().expect("kept quantized");
        assert!(dense.quantization().is_none());
        assert!(
            quant.weight_bytes() * 2 < dense.weight_bytes(),
            "{name}: {} vs {} bytes",
            quant.weight_bytes(),
            dense.weight_bytes()
        );
        for i in 0..PROMPTS.len() {
            let prompt = common::tensor_ids(&g[&format!("input_ids_{i}")]);
            let logits = common::prompt_logits(&quant, &prompt);
            let want = g[&format!("last_logits_{i}")].clone();
            let got = logits.get(prompt.len() - 1).unwrap();
            let rel = common::relative_l2(&got, &want);
            println!(
                "{name} ({q}) prompt {i}: relative L2 error of the last logits vs the dequantized golden {rel:.3}"
            );
            // Candle quantizes activations to Q8 blocks for these dot products: a few percent.
            assert!(rel < 0.1, "{name} prompt {i}: {rel}");
        }
    }
}

/// What the metadata and tensors say of the architecture, experts, soft-caps and windows is what the checkpoint
/// the file was converted from says (Gemma 2's `query_pre_attn_scalar` excepted: GGUF has no
/// key for it, llama.cpp takes `head_dim`, and the fixture's source set it to 24).
#[test]
fn moe_and_gemma2_options_from_metadata_equal_the_checkpoints() {
    for (file, dir) in [
        ("tiny-qwen3.q8_0", "tiny-qwen3"),
        ("tiny-mixtral.q8_0", "tiny-mixtral"),
        ("tiny-qwen2-moe.q8_0", "tiny-qwen2-moe"),
        ("tiny-qwen3-moe.q8_0", "tiny-qwen3-moe"),
        ("tiny-gemma2.q8_0", "tiny-gemma2"),
    ] {
        let gguf = indus_models::gguf::config_from_gguf(&GgufFile::open(&path(file)).unwrap())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let hf =
            indus_models::ModelConfig::from_file(&common::fixture_dir(dir).join("config.json"))
                .unwrap();
        assert_eq!(gguf.architecture, hf.architecture, "{file}");
        // llama.cpp's Qwen2-MoE routes in every layer: the file was converted from the
        // fixture rebuilt without its dense `mlp_only_layers` (see tests/fixtures/gguf).
        let mut want_moe = hf.moe.clone();
        if dir == "tiny-qwen2-moe"
            && let Some(m) = want_moe.as_mut()
        {
            m.sparse_layers = vec![true; hf.num_layers];
        }
        assert_eq!(gguf.moe, want_moe, "{file}");
        match (gguf.gemma, hf.gemma) {
            (Some(g), Some(h)) => {
                assert_eq!(g.query_pre_attn_scalar, gguf.head_dim as f64, "{file}");
                assert_eq!(
                    indus_models::GemmaOptions {
                        query_pre_attn_scalar: h.query_pre_attn_scalar,
                        ..g
                    },
                    h,
                    "{file}"
                );
            }
            (None, None) => {}
            other => panic!("{file}: {other:?}"),
        }
    }
    // Qwen2-MoE: a shared expert (size from the tensors' metadata), no renormalization.
    let q2 = indus_models::gguf::config_from_gguf(
        &GgufFile::open(&path("tiny-qwen2-moe.q8_0")).unwrap(),
    )
    .unwrap()
    .moe
    .unwrap();
    assert_eq!(q2.shared_expert_intermediate, Some(96));
    assert!(!q2.renormalize);
}

#[test]
fn q_and_k_are_unpermuted_a_skipped_permutation_is_caught() {
    // The f16 file is exact: with the un-permutation switched off (reading the file as qwen2,
    // which llama.cpp does not permute), the logits must be far off. This is what keeps the
    // golden test honest about the rotary layout.
    let bytes = std::fs::read(path("tiny-llama3.f16")).unwrap();
    let (model, _) = load("tiny-llama3.f16", true);
    let g = golden("tiny-llama3.f16");
    let prompt = common::tensor_ids(&g["input_ids_0"]);
    let good = common::prompt_logits(&model, &prompt);
    let needle = b"general.architecture";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut patched = bytes.clone();
    // The value follows: type u32 (8 = string), length u64 (5), then "llama" → "qwen2"; the
    // keys `llama.*` become `qwen2.*` (same lengths, so every offset stays).
    let value = at + needle.len() + 4 + 8;
    assert_eq!(&patched[value..value + 5], b"llama");
    patched[value..value + 5].copy_from_slice(b"qwen2");
    let header_end = bytes
        .windows(17)
        .position(|w| w == b"token_embd.weight")
        .unwrap();
    for i in 0..header_end {
        if patched[i..].starts_with(b"llama.") {
            patched[i..i + 6].copy_from_slice(b"qwen2.");
        }
    }
    let dir = std::env::temp_dir().join(format!("indus-gguf-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("as-qwen2.gguf");
    std::fs::write(&p, &patched).unwrap();
    let file = Arc::new(GgufFile::open(&p).unwrap());
    let wrong = CausalLm::load_gguf(
        file,
        &LoadOptions {
            dequantize: true,
            ..Default::default()
        },
    )
    .unwrap();
    let bad = common::prompt_logits(&wrong, &prompt);
    let err_good =
        common::worst_row_relative_error(&good.narrow(1, 0, 512).unwrap(), &g["all_logits_head_0"]);
    let err_bad =
        common::worst_row_relative_error(&bad.narrow(1, 0, 512).unwrap(), &g["all_logits_head_0"]);
    println!("un-permuted {err_good:.2e}, permutation skipped {err_bad:.2e}");
    assert!(
        err_bad > 100.0 * err_good.max(1e-6) && err_bad > 1e-2,
        "{err_bad}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn strings() -> Vec<String> {
    let text = std::fs::read_to_string(common::fixture_dir("tokenizer_strings.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn sentencepiece_tokenizer_from_gguf_equals_the_hf_tokenizer() {
    let file = GgufFile::open(&path("tiny-llama3.f16")).unwrap();
    let ours = indus::tokenizer::gguf::from_gguf(&file, None).unwrap();
    let dir = common::fixture_dir("tiny-llama3");
    let hf = Tokenizer::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
        None,
        &[],
        None,
    )
    .unwrap();
    let mut differ = Vec::new();
    for s in strings() {
        let (a, b) = (ours.encode(&s, true).unwrap(), hf.encode(&s, true).unwrap());
        if a != b {
            differ.push((s.clone(), a, b));
        } else {
            assert_eq!(
                ours.decode(&a, true).unwrap(),
                hf.decode(&b, true).unwrap(),
                "{s:?}"
            );
        }
    }
    assert!(
        differ.is_empty(),
        "{} of 1000 differ, first: {:?}",
        differ.len(),
        differ.first()
    );
    assert_eq!(ours.bos_token_id(), hf.bos_token_id());
    assert!(ours.adds_bos());
}

#[test]
fn byte_level_bpe_tokenizer_from_gguf_equals_the_smollm2_golden() {
    let file = GgufFile::open(&path("tiny-smollm2-tok.q8_0")).unwrap();
    let ours = indus::tokenizer::gguf::from_gguf(&file, None).unwrap();
    let differ = common::smollm2_golden_differences(&ours);
    assert_eq!(differ, 0, "{differ} of 1000 strings differ");
    // No BOS (add_bos_token false), ChatML template, <|im_end|> ends a turn.
    assert!(!ours.adds_bos());
    let chat = ours
        .apply_chat_template(&[indus::tokenizer::ChatMessage::new("user", "Hi")], true)
        .unwrap();
    assert!(
        chat.contains("<|im_start|>user\nHi<|im_end|>")
            && chat.ends_with("<|im_start|>assistant\n"),
        "{chat}"
    );
    let im_end = ours.encode("<|im_end|>", false).unwrap();
    assert_eq!(im_end.len(), 1);
    assert!(ours.eos_token_ids().contains(&im_end[0]) || ours.eos_token_ids().contains(&2));
}

#[test]
fn serve_and_generate_accept_a_gguf_file_and_a_directory_holding_one() {
    let dir = std::env::temp_dir().join(format!("indus-gguf-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(path("tiny-qwen2.q8_0"), dir.join("model.gguf")).unwrap();
    for target in [path("tiny-qwen2.q8_0"), dir.clone()] {
        let files = indus_models::ModelFiles::resolve(
            &indus_models::ModelSource::Local(target.clone()),
            true,
        )
        .unwrap();
        assert!(files.gguf.is_some(), "{target:?}");
    }
    std::fs::copy(path("tiny-llama3.q8_0"), dir.join("other.gguf")).unwrap();
    let err =
        indus_models::ModelFiles::resolve(&indus_models::ModelSource::Local(dir.clone()), true)
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("--gguf-file") && err.contains("other.gguf"),
        "{err}"
    );
    let files = indus_models::ModelFiles::resolve_with(
        &indus_models::ModelSource::Local(dir.clone()),
        true,
        Some("other.gguf"),
    )
    .unwrap();
    assert_eq!(files.gguf.unwrap(), dir.join("other.gguf"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn broken_gguf_files_are_clear_errors_naming_file_and_key() {
    let bytes = std::fs::read(path("tiny-qwen2.q8_0")).unwrap();
    let dir = std::env::temp_dir().join(format!("indus-gguf-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let open = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        match GgufFile::open(&p) {
            Err(e) => e.to_string(),
            Ok(f) => match CausalLm::load_gguf(Arc::new(f), &LoadOptions::default()) {
                Err(e) => e.to_string(),
                Ok(_) => "loaded".into(),
            },
        }
    };
    let e = open("truncated.gguf", &bytes[..bytes.len() / 2]);
    assert!(
        e.contains("truncated.gguf") && e.contains("truncated"),
        "{e}"
    );
    let e = open("header.gguf", &bytes[..1000]);
    assert!(e.contains("header.gguf") && e.contains("truncated"), "{e}");
    let mut magic = bytes.clone();
    magic[..4].copy_from_slice(b"GGML");
    assert!(open("magic.gguf", &magic).contains("bad magic"));
    let rename = |from: &[u8], to: &[u8]| {
        let mut b = bytes.clone();
        let at = b.windows(from.len()).position(|w| w == from).unwrap();
        b[at..at + to.len()].copy_from_slice(to);
        b
    };
    // An architecture we do not serve (same length as "qwen2").
    let e = open(
        "arch.gguf",
        &rename(
            b"\x05\x00\x00\x00\x00\x00\x00\x00qwen2",
            b"\x05\x00\x00\x00\x00\x00\x00\x00gpt2x",
        ),
    );
    assert!(e.contains("gpt2x") && e.contains("arch.gguf"), "{e}");
    // A missing key: rename `qwen2.block_count` so the lookup misses it.
    let e = open(
        "key.gguf",
        &rename(b"qwen2.block_count", b"qwen2.block_kount"),
    );
    assert!(
        e.contains("key.gguf") && e.contains("qwen2.block_count"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
