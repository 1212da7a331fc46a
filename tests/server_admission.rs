//! Admission before any work: caps on prompts, n and prompts × n, and prompts too long for
//! the context refused by byte length before they are tokenized.

mod common_server;

use common_server::{MODEL_NAME, TestServer, assert_error_shape, post_json};
use serde_json::{Value, json};

/// Posts `body`; it must be refused with a 400 in OpenAI's shape. Returns the error object.
async fn refused(url: &str, body: &Value) -> Value {
    let (status, _, body) = post_json(url, body, None).await;
    assert_eq!(status, 400, "{body}");
    Value::Object(assert_error_shape(&body).clone())
}

#[tokio::test]
async fn fan_out_is_capped_per_request() {
    let s = TestServer::start(&[
        "--max-prompts-per-request",
        "16",
        "--max-n",
        "8",
        "--max-num-seqs",
        "32",
    ]);
    let url = s.url("/v1/completions");
    let prompts = |k: usize| vec!["Hi"; k];
    // The amplification request of issue 14: 100 prompts × n = 128.
    assert_eq!(
        refused(
            &url,
            &json!({"model": MODEL_NAME, "prompt": prompts(100), "n": 128, "max_tokens": 1})
        )
        .await["param"],
        "prompt"
    );
    assert_eq!(
        refused(
            &url,
            &json!({"model": MODEL_NAME, "prompt": "Hi", "n": 9, "max_tokens": 1})
        )
        .await["param"],
        "n"
    );
    // Each cap alone is met, the product is not.
    let err = refused(
        &url,
        &json!({"model": MODEL_NAME, "prompt": prompts(5), "n": 8, "max_tokens": 1}),
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("40 sequences"),
        "{err}"
    );
    assert_eq!(refused(&s.url("/v1/chat/completions"), &json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "n": 9, "max_tokens": 1})).await["param"], "n");
    // Within every cap: served.
    let (status, _, body) = post_json(
        &url,
        &json!({"model": MODEL_NAME, "prompt": prompts(4), "n": 8, "max_tokens": 1}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"].as_array().unwrap().len(), 32);
}

#[tokio::test]
async fn prompts_too_long_for_the_context_are_refused_by_their_bytes() {
    let s = TestServer::start(&[]);
    let huge = "a".repeat(3_000_000);
    let err = refused(
        &s.url("/v1/completions"),
        &json!({"model": MODEL_NAME, "prompt": ["Hi", huge], "max_tokens": 1}),
    )
    .await;
    assert_eq!(err["param"], "prompt");
    assert!(
        err["message"].as_str().unwrap().contains("3000000 bytes"),
        "{err}"
    );
    assert_eq!(refused(&s.url("/v1/chat/completions"), &json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": huge}], "max_tokens": 1})).await["param"], "messages");
    // Whitespace may be normalized away, so it does not count: a long run of spaces is
    // tokenized and judged by its tokens (here: over the 256-token context).
    let spaces = format!("Hi{}", " ".repeat(100_000));
    let err = refused(
        &s.url("/v1/completions"),
        &json!({"model": MODEL_NAME, "prompt": spaces, "max_tokens": 1}),
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length"),
        "{err}"
    );
    // A normal request is unaffected.
    let (status, _, body) = post_json(
        &s.url("/v1/completions"),
        &json!({"model": MODEL_NAME, "prompt": "Hello there", "max_tokens": 2}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_burst_that_free_slots_can_take_is_never_refused() {
    // Nothing may wait, but 32 slots are free: a burst of 32 all start at once.
    let s = TestServer::start(&["--max-num-seqs", "32", "--max-waiting-requests", "0"]);
    let url = s.url("/v1/completions");
    let body = json!({"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 2});
    let results = futures::future::join_all((0..32).map(|_| post_json(&url, &body, None))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

#[tokio::test]
async fn the_waiting_limit_counts_sequences() {
    let s = TestServer::start(&[
        "--max-num-seqs",
        "2",
        "--max-waiting-requests",
        "2",
        "--max-model-len",
        "1024",
        "--num-kv-blocks",
        "160",
    ]);
    let url = s.url("/v1/completions");
    // Both running slots taken by one long stream with n = 2.
    let long = json!({"model": MODEL_NAME, "prompt": "Hi", "n": 2, "max_tokens": 1000,
        "ignore_eos": true, "stream": true});
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut running = resp.bytes_stream();
    futures::StreamExt::next(&mut running)
        .await
        .unwrap()
        .unwrap();
    s.wait_metric(
        "indus_num_requests_running",
        std::time::Duration::from_secs(20),
        |v| v == 2.0,
    )
    .await;
    // n = 2 fills the waiting limit of 2 sequences: admitted, it waits.
    let waiting_body = json!({"model": MODEL_NAME, "prompt": "Hi", "n": 2, "max_tokens": 1});
    let waiter = tokio::spawn({
        let url = url.clone();
        async move { post_json(&url, &waiting_body, None).await }
    });
    s.wait_metric(
        "indus_num_requests_waiting",
        std::time::Duration::from_secs(20),
        |v| v == 2.0,
    )
    .await;
    // One more sequence is one too many.
    let (status, headers, body) = post_json(
        &url,
        &json!({"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 1}),
        None,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let err = assert_error_shape(&body);
    assert!(
        err["message"].as_str().unwrap().contains("sequences"),
        "{body}"
    );
    let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // Ending the stream lets the waiting request run.
    drop(running);
    let (status, _, body) = waiter.await.unwrap();
    assert_eq!(status, 200, "{body}");
}
