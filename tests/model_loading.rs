//! Loading: local directories, the hub cache in offline mode, dummy weights, dtypes, and the
//! errors users see for broken checkpoints.

mod common;

use candle_core::{DType, Device};
use clap::Parser;
use indus_models::{CausalLm, LoadFormat, LoadOptions, ModelFiles, ModelSource};
use std::path::{Path, PathBuf};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("indus-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_fixture(name: &str, to: &Path, skip: &[&str]) {
    for e in std::fs::read_dir(common::fixture_dir(name)).unwrap() {
        let e = e.unwrap();
        let f = e.file_name().to_string_lossy().to_string();
        if !skip.contains(&f.as_str()) {
            std::fs::copy(e.path(), to.join(&f)).unwrap();
        }
    }
}

fn opts(dtype: DType, format: LoadFormat) -> LoadOptions {
    LoadOptions {
        dtype,
        device: Device::Cpu,
        format,
        seed: 7,
        dequantize: false,
    }
}

#[test]
fn offline_hub_cache_resolves_like_hf_hub() {
    // HF cache layout: hub/models--org--name/{refs/main, snapshots/<sha>/files}.
    let home = temp_dir("hf-home");
    let repo = home.join("hub/models--acme--tiny");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    copy_fixture("tiny-llama", &snap, &["golden.safetensors"]);
    // SAFETY: this test binary's only test touching the environment; no other thread reads it.
    unsafe {
        std::env::set_var("HF_HOME", &home);
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let source = ModelSource::parse("acme/tiny", None);
    assert!(matches!(source, ModelSource::Hub { .. }));
    let files = ModelFiles::resolve(&source, true).unwrap();
    assert!(files.config.as_ref().unwrap().starts_with(&snap));
    assert_eq!(files.weights, vec![snap.join("model.safetensors")]);
    CausalLm::load(&files, &opts(DType::F32, LoadFormat::Auto)).unwrap();

    let err = ModelFiles::resolve(&ModelSource::parse("acme/absent", None), true).unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    std::fs::remove_dir_all(&home).ok();
}

#[test]
fn dummy_weights_need_only_the_config() {
    let dir = temp_dir("dummy");
    copy_fixture(
        "tiny-qwen2",
        &dir,
        &["model.safetensors", "golden.safetensors"],
    );
    let files = ModelFiles::resolve(&ModelSource::Local(dir.clone()), false).unwrap();
    assert!(files.weights.is_empty());
    let model = CausalLm::load(&files, &opts(DType::F32, LoadFormat::Dummy)).unwrap();
    assert_eq!(model.config().vocab_size, 32000);
    // Without weights, a normal load says what is missing.
    let err = ModelFiles::resolve(&ModelSource::Local(dir.clone()), true).unwrap_err();
    assert!(err.to_string().contains("no safetensors weights"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bf16_and_f16_track_f32() {
    let files = ModelFiles::from_dir(&common::fixture_dir("tiny-llama"), true).unwrap();
    let prompt = common::prompts(&[12], 4).remove(0);
    let logits = |dtype| {
        let model = CausalLm::load(&files, &opts(dtype, LoadFormat::Auto)).unwrap();
        let engine = indus::engine::Engine::new(
            model,
            common::load("tiny-llama").1,
            indus::engine::EngineConfig::default(),
        )
        .unwrap();
        let h = indus::engine::EngineHandle::spawn(engine).unwrap();
        common::run_alone(&h, &prompt, common::greedy(4))
    };
    let f32_tokens = logits(DType::F32);
    // Reduced precision runs end to end; its first greedy token agrees with f32.
    for dtype in [DType::BF16, DType::F16] {
        let t = logits(dtype);
        assert_eq!(t.len(), 4);
        assert_eq!(t[0], f32_tokens[0], "{dtype:?}");
    }
}

#[test]
fn broken_checkpoints_fail_with_clear_errors() {
    // Unsupported architecture.
    let dir = temp_dir("arch");
    copy_fixture("tiny-llama", &dir, &["golden.safetensors"]);
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("LlamaForCausalLM", "GPTNeoXForCausalLM")
            .replace("\"llama\"", "\"gpt_neox\""),
    )
    .unwrap();
    let files = ModelFiles::from_dir(&dir, true).unwrap();
    let err = CausalLm::load(&files, &opts(DType::F32, LoadFormat::Auto))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("unsupported architecture"),
        "{err}"
    );

    // Shape mismatch: the config says a wider MLP than the weights have.
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"intermediate_size\": 176", "\"intermediate_size\": 180"),
    )
    .unwrap();
    let err = CausalLm::load(&files, &opts(DType::F32, LoadFormat::Auto))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("mlp") && msg.contains("shape"), "{msg}");

    // Missing file.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    // Missing tokenizer: the files resolve (--tokenizer may supply one), the load says so.
    assert!(
        ModelFiles::from_dir(&dir, true)
            .unwrap()
            .tokenizer
            .is_none()
    );
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        model: indus::config::ModelArgs,
    }
    let args = Cli::parse_from(["indus", dir.to_str().unwrap()]);
    let err = indus::loader::load_model(&args.model).err().unwrap();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
