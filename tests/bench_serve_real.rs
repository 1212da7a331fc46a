//! `indus bench serve` against the real `indus serve` (the tiny fixture model on CPU, over
//! loopback): the CLI end to end and its JSON (counts, monotonic timestamps, no failures),
//! chat with text prompts of a tokenizer's lengths, and the shared-prefix dataset.

mod common_server;

use common_server::{MODEL_NAME, TestServer};
use indus::bench::dataset::DatasetKind;
use indus::bench::serve::{self, ServeBenchArgs, ServeResult};
use std::process::Command;

fn check_times(r: &indus::bench::metrics::RequestRecord) {
    let first = r.first_token_s.expect("a first token");
    assert!(
        0.0 <= r.start_s && r.start_s <= first && first <= r.end_s,
        "{r:?}"
    );
    assert!(r.itl_s.iter().all(|&x| x >= 0.0));
    assert!(first + r.itl_s.iter().sum::<f64>() <= r.end_s + 1e-6);
    assert!(r.ttft_s.unwrap() <= r.latency_s);
}

#[test]
fn bench_serve_cli_against_the_real_server() {
    let server = TestServer::start(&[]);
    let dir = std::env::temp_dir().join(format!("indus-bench-real-{}", std::process::id()));
    let json = dir.join("serve.json");
    let out = Command::new(env!("CARGO_BIN_EXE_indus"))
        .args([
            "bench",
            "serve",
            "--base-url",
            &server.base,
            "--model",
            MODEL_NAME,
        ])
        .args([
            "--num-prompts",
            "24",
            "--input-len",
            "16",
            "--output-len",
            "8",
        ])
        .args(["--range-ratio", "0.25", "--max-concurrency", "4"])
        .args([
            "--request-rate",
            "40",
            "--ignore-eos",
            "--seed",
            "1",
            "--warmup",
            "2",
        ])
        .args([
            "--slo-ttft-ms",
            "60000",
            "--no-progress",
            "--label",
            "indus-cpu",
        ])
        .arg("--output-json")
        .arg(&json)
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("run indus bench serve");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Serving Benchmark Result"), "{stdout}");
    assert!(stdout.contains("Failed requests:") && stdout.contains("P99 TPOT (ms):"));

    let r: ServeResult = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let s = &r.summary;
    assert_eq!((s.completed, s.failed), (24, 0), "{stdout}");
    assert_eq!(r.requests.len(), 24);
    assert_eq!(r.info.label.as_deref(), Some("indus-cpu"));
    let mut idx: Vec<usize> = r.requests.iter().map(|x| x.index).collect();
    idx.sort();
    assert_eq!(idx, (0..24).collect::<Vec<_>>());
    for rec in &r.requests {
        assert!(rec.success, "{rec:?}");
        assert!((12..=20).contains(&rec.prompt_len));
        assert!((6..=10).contains(&rec.output_len));
        // --ignore-eos: exactly max_tokens, as the server's usage says.
        assert_eq!(rec.output_tokens, rec.output_len, "{rec:?}");
        assert_eq!(
            rec.prompt_tokens,
            Some(rec.prompt_len),
            "token-id prompts are sent as is"
        );
        assert!(rec.itl_s.len() < rec.output_tokens);
        check_times(rec);
    }
    assert_eq!(
        s.total_output_tokens,
        r.requests.iter().map(|x| x.output_len).sum::<usize>()
    );
    assert!(s.max_concurrency_observed <= 4);
    assert_eq!(s.goodput, Some(s.request_throughput));
    assert!(s.ttft.p50_ms > 0.0 && s.tpot.p50_ms > 0.0 && s.e2el.p99_ms >= s.e2el.p50_ms);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_text_prompts_and_shared_prefixes() {
    let server = TestServer::start(&[]);
    let mut a = ServeBenchArgs::new(&format!("{}/v1", server.base), MODEL_NAME);
    a.endpoint = "/v1/chat/completions".into();
    a.dataset.tokenizer = Some(indus::loader::repo_fixture("tiny-llama/tokenizer.json"));
    a.dataset.input_len = 20;
    a.dataset.output_len = 6;
    a.num_prompts = 8;
    a.max_concurrency = Some(4);
    a.ignore_eos = true;
    a.request_timeout = 120.0;
    let r = serve::run(&a).await.unwrap();
    assert_eq!(
        (r.summary.completed, r.summary.failed),
        (8, 0),
        "{:?}",
        r.requests[0]
    );
    for rec in &r.requests {
        assert_eq!(rec.output_tokens, 6);
        // The chat template adds tokens around the 20-token message.
        assert!(rec.prompt_tokens.unwrap() > rec.prompt_len, "{rec:?}");
        check_times(rec);
    }

    let mut p = ServeBenchArgs::new(&server.base, MODEL_NAME);
    p.dataset.dataset_name = DatasetKind::Prefix;
    p.dataset.prefix_len = 64;
    p.dataset.input_len = 8;
    p.dataset.output_len = 4;
    p.num_prompts = 8;
    p.max_concurrency = Some(1);
    p.ignore_eos = true;
    p.request_timeout = 120.0;
    let r = serve::run(&p).await.unwrap();
    assert_eq!((r.summary.completed, r.summary.failed), (8, 0));
    assert!(r.requests.iter().all(|x| x.prompt_tokens == Some(72)));
    // After the first, each request's 64-token prefix comes from the prefix cache.
    let hits = server
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("indus_prefix_cache_hits") && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>();
    assert!(hits >= 7.0 * 64.0, "prefix-cache hits {hits}");
}
