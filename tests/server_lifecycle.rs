//! Readiness, client disconnects, graceful shutdown.

mod common_server;

use clap::Parser;
use common_server::{MODEL_NAME, TestServer, assert_error_shape, post_json, sse_data};
use futures::StreamExt;
use indus::server::{LoadedModel, Reason, ServeArgs, Server};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const TOTAL: &str = "indus_kv_cache_total_blocks";
const FREE: &str = "indus_kv_cache_free_blocks";
const RUNNING: &str = "indus_num_requests_running";

fn long_stream(max_tokens: usize) -> serde_json::Value {
    json!({"model": MODEL_NAME, "prompt": "Tell me everything", "max_tokens": max_tokens,
           "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}})
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_its_blocks() {
    let s = TestServer::start(&[]);
    // Warm up so the engine has published its gauges.
    assert_eq!(
        post_json(
            &s.url("/v1/completions"),
            &json!({"prompt": "hi", "max_tokens": 2}),
            None
        )
        .await
        .0,
        200
    );
    let total = s.metric(TOTAL).await.unwrap();
    assert_eq!(total, 64.0);
    assert_eq!(s.metric(FREE).await.unwrap(), total);

    let resp = reqwest::Client::new()
        .post(s.url("/v1/completions"))
        .json(&long_stream(230))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while seen < 3 {
        body.next().await.unwrap().unwrap();
        seen += 1;
    }
    let in_use = s
        .wait_metric(FREE, Duration::from_secs(5), |v| v < total)
        .await;
    assert!(in_use < total);
    assert_eq!(s.metric(RUNNING).await.unwrap(), 1.0);
    drop(body); // the client goes away

    s.wait_metric(FREE, Duration::from_secs(10), |v| v == total)
        .await;
    s.wait_metric(RUNNING, Duration::from_secs(5), |v| v == 0.0)
        .await;
    let aborted = s
        .wait_metric(
            r#"indus_requests_total{finish_reason="abort",status="499"}"#,
            Duration::from_secs(5),
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(aborted, 1.0);

    // A non-streaming request whose client hangs up is aborted too.
    let mut sock = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let body =
        serde_json::to_vec(&json!({"prompt": "x", "max_tokens": 240, "ignore_eos": true})).unwrap();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body).await.unwrap();
    s.wait_metric(RUNNING, Duration::from_secs(5), |v| v == 1.0)
        .await;
    drop(sock);
    s.wait_metric(FREE, Duration::from_secs(10), |v| v == total)
        .await;
    s.wait_metric(RUNNING, Duration::from_secs(5), |v| v == 0.0)
        .await;

    // The engine is fine afterwards.
    let (status, _, resp) = post_json(
        &s.url("/v1/completions"),
        &json!({"prompt": "hi", "max_tokens": 3}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn sigterm_drains_the_stream_in_flight_then_exits_zero() {
    let mut s = TestServer::start(&[]);
    let resp = reqwest::Client::new()
        .post(s.url("/v1/completions"))
        .json(&long_stream(200))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap();
    s.terminate();

    // The listener stays open while draining: /ready turns 503 at once, and a new
    // request gets a fast 503 in OpenAI's shape with Retry-After (to go to another replica).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = reqwest::get(s.url("/ready"))
            .await
            .expect("the listener is open");
        if ready.status() == 503 {
            assert_error_shape(&ready.json().await.unwrap());
            break;
        }
        assert!(Instant::now() < deadline, "/ready still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, headers, err) = post_json(
        &s.url("/v1/completions"),
        &json!({"prompt": "hi", "max_tokens": 2}),
        None,
    )
    .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(
        assert_error_shape(&err)["type"],
        "service_unavailable_error"
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(headers["connection"], "close");
    assert_eq!(reqwest::get(s.url("/health")).await.unwrap().status(), 200);
    // The stream in flight runs to its end.
    while let Some(chunk) = body.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let usage: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 200);

    let status = s
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits");
    assert!(status.success(), "exit status {status:?}");
    let logs = s.logs().join("\n");
    assert!(logs.contains("SIGTERM"), "{logs}");
    assert!(logs.contains("drained"), "{logs}");
}

/// Requests still running at the shutdown timeout are cut cleanly: a stream gets an error
/// event and `[DONE]`, a non-streamed request a 503 in OpenAI's shape.
#[tokio::test]
async fn shutdown_timeout_cuts_requests_that_run_too_long() {
    let mut s = TestServer::start(&["--max-model-len", "1024", "--shutdown-timeout", "1"]);
    let resp = reqwest::Client::new()
        .post(s.url("/v1/completions"))
        .json(&long_stream(1000))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    let url = s.url("/v1/completions");
    let plain = tokio::spawn(async move {
        let body = json!({"prompt": "x", "max_tokens": 1000, "ignore_eos": true});
        post_json(&url, &body, None).await
    });
    s.wait_metric(RUNNING, Duration::from_secs(5), |v| v == 2.0)
        .await;
    let started = Instant::now();
    s.terminate();
    let status = s
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits");
    assert!(status.success(), "exit status {status:?}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    // The stream was cut with an error event, then [DONE]; it did not run to its end.
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(
            &chunk.expect("the stream ends cleanly"),
        ));
    }
    let events = sse_data(&rest);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{rest}");
    let error: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        assert_error_shape(&error)["type"],
        "service_unavailable_error"
    );
    assert!(!rest.contains("\"usage\""), "{rest}");
    let (status, _, err) = plain.await.unwrap();
    assert_eq!(status, 503, "{err}");
    assert_error_shape(&err);
    assert!(s.logs().join("\n").contains("shutdown timeout"));
}

#[tokio::test]
async fn a_model_that_cannot_load_exits_non_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_indus"))
        .args(["serve", "/nonexistent/model/dir", "--port", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot load the model"));
}

/// An engine-thread panic fails the stream in flight (an error event, after which the
/// stream ends) and the server exits non-zero.
#[tokio::test]
async fn an_engine_panic_fails_requests_and_exits_non_zero() {
    let mut s = TestServer::start_with_env(&[], &[("INDUS_FAULT_PANIC_AT_STEP", "5")]);
    let resp = reqwest::Client::new()
        .post(s.url("/v1/completions"))
        .json(&long_stream(50))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the stream starts before the crash");
    let body = resp.text().await.unwrap();
    let events = sse_data(&body);
    let error = events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .find(|v| v.get("error").is_some())
        .expect("an error event");
    assert_error_shape(&error);
    assert!(
        events
            .iter()
            .all(|e| !e.contains("\"finish_reason\":\"length\"")),
        "the request must not look complete"
    );
    let status = s.wait_exit(Duration::from_secs(20)).expect("server exits");
    assert!(!status.success(), "exit status {status:?}");
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// In process, with a loader that waits: 503 (OpenAI shape) while loading, /health 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_model_loads() {
    common_server::init_tls();
    let model = indus::loader::repo_fixture("tiny-llama");
    let cli = Cli::parse_from([
        "serve",
        model.to_str().unwrap(),
        "--port",
        "0",
        "--max-model-len",
        "128",
        "--num-kv-blocks",
        "16",
        "--served-model-name",
        MODEL_NAME,
    ]);
    let args = cli.serve;
    let server = Server::bind(&args).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let shutdown = server.shutdown();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let run = tokio::spawn(server.run(move || {
        let _ = wait.recv();
        let (engine, summary) = indus::loader::start_engine(&args.model, &args.cache, &args.sched)?;
        Ok(LoadedModel {
            engine: Some(engine),
            pooling: Vec::new(),
            name: summary.name,
            quantization: summary.quantization,
            architecture: Some(summary.architecture.to_string()),
            embedding: None,
        })
    }));

    assert_eq!(
        reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = reqwest::get(format!("{base}/ready")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_error_shape(&ready.json().await.unwrap());
    let (status, _, resp) = post_json(
        &format!("{base}/v1/completions"),
        &json!({"prompt": "hi", "max_tokens": 2}),
        None,
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(
        assert_error_shape(&resp)["type"],
        "service_unavailable_error"
    );
    assert_eq!(
        reqwest::get(format!("{base}/v1/models"))
            .await
            .unwrap()
            .status(),
        503
    );

    go.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/ready"))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, resp) = post_json(
        &format!("{base}/v1/completions"),
        &json!({"prompt": "hi", "max_tokens": 2}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{resp}");

    shutdown.trigger(Reason::Requested);
    run.await.unwrap().unwrap();
}
