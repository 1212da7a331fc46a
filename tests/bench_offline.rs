//! `bench throughput` and `bench latency` on the tiny fixture model (CPU): exact token
//! counts, sane timings, the roofline figure, and --tokenizer for a config-only directory.

use clap::Parser;
use indus::bench::offline::{self, LatencyArgs, ThroughputArgs};

#[derive(Parser)]
struct Throughput {
    #[command(flatten)]
    a: ThroughputArgs,
}

#[derive(Parser)]
struct Latency {
    #[command(flatten)]
    a: LatencyArgs,
}

fn fixture(name: &str) -> String {
    indus::loader::repo_fixture(name).display().to_string()
}

#[test]
fn throughput_generates_every_token() {
    let t = Throughput::parse_from([
        "t",
        "--model",
        &fixture("tiny-llama"),
        "--num-prompts",
        "12",
        "--input-len",
        "24",
        "--output-len",
        "10",
        "--prefix-len",
        "8",
    ]);
    let r = offline::throughput(&t.a).unwrap();
    assert_eq!(r.num_requests, 12);
    assert_eq!(r.total_prompt_tokens, 12 * 32);
    assert_eq!(r.total_output_tokens, 12 * 10);
    assert!(r.output_tokens_per_s > 0.0 && r.total_tokens_per_s > r.output_tokens_per_s);
    assert!(r.mean_ttft_ms > 0.0 && r.mean_e2e_ms >= r.mean_ttft_ms);
    assert_eq!(r.model.dtype, "f32");
}

#[test]
fn latency_reports_prefill_decode_and_roofline() {
    let dir = std::env::temp_dir().join(format!("indus-bench-lat-{}", std::process::id()));
    let json = dir.join("lat.json");
    let l = Latency::parse_from([
        "l",
        &fixture("tiny-llama3"),
        "--batch-size",
        "4",
        "--input-len",
        "16",
        "--output-len",
        "12",
        "--num-iters",
        "2",
        "--bandwidth-gbps",
        "10",
        "--output-json",
        json.to_str().unwrap(),
    ]);
    let r = offline::latency(&l.a).unwrap();
    assert_eq!(r.iters.len(), 2);
    assert!(r.prefill_ms_mean > 0.0 && r.decode_step_ms_mean > 0.0);
    assert!(r.e2e_ms_mean > r.prefill_ms_mean);
    assert!(r.e2e_ms_mean >= r.prefill_ms_mean + 10.0 * r.decode_step_ms_mean * 0.9);
    assert_eq!(r.model.weight_bytes, r.model.parameters * 4);
    let floor = r.model.weight_bytes as f64 / 10e9 * 1e3;
    assert!((r.roofline_step_ms - floor).abs() < 1e-9);
    assert!(!r.bandwidth_measured);
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(raw["batch_size"], 4);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tokenizer_override_serves_a_config_only_directory() {
    // A directory with only config.json, as shapes/ has for full-size models.
    let dir = std::env::temp_dir().join(format!("indus-bench-shape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        indus::loader::repo_fixture("tiny-llama/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let tok = indus::loader::repo_fixture("tiny-llama/tokenizer.json");
    let l = Latency::parse_from([
        "l",
        "--model",
        dir.to_str().unwrap(),
        "--load-format",
        "dummy",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--batch-size",
        "2",
        "--input-len",
        "8",
        "--output-len",
        "4",
        "--num-iters",
        "1",
        "--num-iters-warmup",
        "0",
    ]);
    let r = offline::latency(&l.a).unwrap();
    assert!(r.bandwidth_measured && r.bandwidth_gbps > 0.1);
    assert!(r.fraction_of_roofline > 0.0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn host_bandwidth_is_plausible() {
    let gbps = offline::host_copy_bandwidth(8 << 20, 0.05);
    assert!((0.1..10_000.0).contains(&gbps), "{gbps}");
}
