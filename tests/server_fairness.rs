//! Fairness between keys: `priority` only for keys allowed it, and waiting requests served
//! round-robin across keys, so a flood from one key cannot starve another.

mod common_server;

use common_server::{MODEL_NAME, TestServer, assert_error_shape, completion, keys_file, post_json};
use serde_json::json;
use std::time::{Duration, Instant};

const KEYS: &str = "[[keys]]\nname = \"vip\"\nkey = \"sk-vip\"\nallow_priority = true\n\n[[keys]]\nname = \"flood\"\nkey = \"sk-flood\"\n\n[[keys]]\nname = \"other\"\nkey = \"sk-other\"\n";

#[tokio::test]
async fn priority_is_only_for_keys_allowed_it() {
    let (_dir, keys) = keys_file("fair-priority", KEYS);
    let s = TestServer::start(&["--api-keys-file", keys.to_str().unwrap()]);
    let url = s.url("/v1/completions");
    let mut body = completion(2);
    body["priority"] = json!(i32::MIN);
    let (status, _, resp) = post_json(&url, &body, Some("sk-flood")).await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(assert_error_shape(&resp)["param"], "priority");
    let (status, _, resp) = post_json(&s.url("/v1/chat/completions"),
        &json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "priority": -1}),
        Some("sk-other")).await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(assert_error_shape(&resp)["param"], "priority");
    let (status, _, resp) = post_json(&url, &body, Some("sk-vip")).await;
    assert_eq!(status, 200, "{resp}");
    body["priority"] = json!(0);
    let (status, _, resp) = post_json(&url, &body, Some("sk-flood")).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn a_flood_from_one_key_does_not_starve_another() {
    let (_dir, keys) = keys_file("fair-flood", KEYS);
    let s = TestServer::start(&[
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--max-num-seqs",
        "1",
    ])
    .with_metrics_key("sk-other");
    let url = s.url("/v1/completions");
    const FLOOD: usize = 20;
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let url = url.clone();
        flood.push(tokio::spawn(async move {
            let (status, _, _) = post_json(&url, &completion(100), Some("sk-flood")).await;
            (status, Instant::now())
        }));
    }
    // The flood is queued in the engine before the other key asks.
    s.wait_metric("indus_num_requests_waiting", Duration::from_secs(30), |v| {
        v >= (FLOOD - 4) as f64
    })
    .await;
    let sent = Instant::now();
    let (status, _, resp) = post_json(&url, &completion(100), Some("sk-other")).await;
    let done = Instant::now();
    assert_eq!(status, 200, "{resp}");
    let mut overtaking = 0;
    for f in flood {
        let (status, at) = f.await.unwrap();
        assert_eq!(status, 200);
        if at > sent && at < done {
            overtaking += 1;
        }
    }
    // First come first served would finish the whole flood first; round-robin lets at
    // most the running request and the flood's next turn go before it.
    eprintln!("flood requests finished while the other key's request waited: {overtaking}");
    assert!(
        overtaking <= 3,
        "{overtaking} of {FLOOD} flood requests went first"
    );
}

/// A flood that fills the waiting queue gets 429s, but another key still gets in: a full
/// queue admits a key below its fair share of the engine.
#[tokio::test]
async fn a_full_queue_still_admits_another_key() {
    let (_dir, keys) = keys_file("fair-full", KEYS);
    let s = TestServer::start(&[
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--max-num-seqs",
        "1",
        "--max-waiting-requests",
        "4",
    ])
    .with_metrics_key("sk-other");
    let url = s.url("/v1/completions");
    let mut flood = Vec::new();
    for _ in 0..16 {
        let url = url.clone();
        flood.push(tokio::spawn(async move {
            post_json(&url, &completion(100), Some("sk-flood")).await.0
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.wait_metric("indus_num_requests_waiting", Duration::from_secs(30), |v| {
        v >= 4.0
    })
    .await;
    // The queue is full for the flood key...
    let (status, _, resp) = post_json(&url, &completion(100), Some("sk-flood")).await;
    assert_eq!(status, 429, "{resp}");
    // ...but not for a key that has nothing in it.
    let (status, _, resp) = post_json(&url, &completion(4), Some("sk-other")).await;
    assert_eq!(status, 200, "{resp}");
    let statuses: Vec<u16> = futures::future::join_all(flood)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        statuses.contains(&429),
        "the flood must overflow: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
}
