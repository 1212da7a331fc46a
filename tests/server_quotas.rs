//! Per-key quotas from the keys file: requests per minute, requests in flight (a stream
//! holds its slot until it ends) and a daily token budget that survives a restart with the
//! same `--state-dir`. Refusals are 429s in OpenAI's shape with `Retry-After`, and every
//! response to a key with limits carries OpenAI's `x-ratelimit-*` headers.

mod common_server;

use common_server::{
    MODEL_NAME, TestServer, assert_error_shape, completion, keys_file, post_json, sse_data,
};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} in {h:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn requests_per_minute_refuses_with_retry_after_and_headers() {
    let (dir, keys) = keys_file(
        "quota-rpm",
        "[[keys]]\nname = \"limited\"\nkey = \"sk-lim\"\nrequests_per_minute = 2\n\n[[keys]]\nname = \"free\"\nkey = \"sk-free\"\n",
    );
    let audit = dir.join("audit.jsonl");
    let s = TestServer::start(&[
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ])
    .with_metrics_key("sk-free");
    let url = s.url("/v1/completions");
    for remaining in ["1", "0"] {
        let (status, h, body) = post_json(&url, &completion(2), Some("sk-lim")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), remaining);
        assert!(header(&h, "x-ratelimit-reset-requests").ends_with('s'));
        // No tokens-per-minute limit: no tokens headers.
        assert!(h.get("x-ratelimit-limit-tokens").is_none());
    }
    let (status, h, body) = post_json(&url, &completion(2), Some("sk-lim")).await;
    assert_eq!(status, 429, "{body}");
    let err = assert_error_shape(&body);
    assert_eq!(err["type"], "rate_limit_exceeded");
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert!(err["param"].is_null());
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("requests per minute"),
        "{body}"
    );
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
    // Other routes report the standing without spending it; other keys are not limited.
    let models = reqwest::Client::new()
        .get(s.url("/v1/models"))
        .bearer_auth("sk-lim")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(header(models.headers(), "x-ratelimit-limit-requests"), "2");
    let (status, h, _) = post_json(&url, &completion(2), Some("sk-free")).await;
    assert_eq!(status, 200);
    assert!(h.get("x-ratelimit-limit-requests").is_none());
    assert_eq!(
        s.metric(
            r#"indus_quota_rejections_total{key_name="limited",reason="requests_per_minute"}"#
        )
        .await,
        Some(1.0)
    );
    // The refusal is in the audit log, under the key's name.
    let log = std::fs::read_to_string(&audit).unwrap();
    let refused: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["status"] == 429)
        .collect();
    assert_eq!(refused.len(), 1, "{log}");
    assert_eq!(refused[0]["key_name"], "limited");
}

#[tokio::test]
async fn tokens_per_minute_counts_prompt_and_completion_and_refuses_once_overdrawn() {
    let (_dir, keys) = keys_file(
        "quota-tpm",
        "[[keys]]\nname = \"tpm\"\nkey = \"sk-tpm\"\ntokens_per_minute = 40\n\n[[keys]]\nname = \"free\"\nkey = \"sk-free\"\n",
    );
    let s =
        TestServer::start(&["--api-keys-file", keys.to_str().unwrap()]).with_metrics_key("sk-free");
    let url = s.url("/v1/completions");
    // A full bucket admits one request, which may overdraw it: prompt + 48 tokens > 40.
    let (status, h, body) = post_json(&url, &completion(48), Some("sk-tpm")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "40");
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used > 40, "{body}");
    let (status, h, body) = post_json(&url, &completion(2), Some("sk-tpm")).await;
    assert_eq!(status, 429, "{body}");
    let err = assert_error_shape(&body);
    assert_eq!(err["type"], "rate_limit_exceeded");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{body}"
    );
    assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), "0");
    // The bucket refills at 40 a minute: the overdraft of `used - 40` tokens and one more
    // take (used - 40 + 1) * 1.5 s.
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    let want = ((used - 40 + 1) as f64 * 1.5).ceil() as u64;
    assert!(
        retry.abs_diff(want) <= 1,
        "Retry-After {retry}, want about {want}"
    );
    // Another key is not limited.
    let (status, _, body) = post_json(&url, &completion(48), Some("sk-free")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.metric(r#"indus_quota_rejections_total{key_name="tpm",reason="tokens_per_minute"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_stream_holds_its_concurrency_slot_until_it_ends() {
    let (_dir, keys) = keys_file(
        "quota-conc",
        "[[keys]]\nname = \"one\"\nkey = \"sk-one\"\nmax_concurrent_requests = 1\ntokens_per_minute = 2000\n",
    );
    let s = TestServer::start(&[
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--max-model-len",
        "1024",
    ])
    .with_metrics_key("sk-one");
    let url = s.url("/v1/completions");
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth("sk-one")
        .json(
            &json!({"model": MODEL_NAME, "prompt": "Tell me everything", "max_tokens": 900,
                      "ignore_eos": true, "stream": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::from_utf8_lossy(&body.next().await.unwrap().unwrap()).to_string();
    let (status, h, err) = post_json(&url, &completion(2), Some("sk-one")).await;
    assert_eq!(status, 429, "{err}");
    assert_eq!(assert_error_shape(&err)["type"], "rate_limit_exceeded");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("concurrent"),
        "{err}"
    );
    assert!(h.get("retry-after").is_some());
    assert_eq!(
        s.metric(r#"indus_quota_requests_in_flight{key_name="one"}"#)
            .await,
        Some(1.0)
    );
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert_eq!(sse_data(&text).last().map(String::as_str), Some("[DONE]"));
    // The stream is over: its slot is free at once.
    let (status, h, body) = post_json(&url, &completion(2), Some("sk-one")).await;
    assert_eq!(status, 200, "{body}");
    // Its 900 completion tokens were charged to tokens per minute (which refills at 33/s).
    assert_eq!(header(&h, "x-ratelimit-limit-tokens"), "2000");
    let remaining: u64 = header(&h, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert!(remaining < 1800, "remaining tokens {remaining}");
    assert!(header(&h, "x-ratelimit-reset-tokens").ends_with('s'));
}

#[tokio::test]
async fn the_daily_budget_survives_a_restart_with_the_same_state_dir() {
    let (dir, keys) = keys_file(
        "quota-daily",
        "[[keys]]\nname = \"budget\"\nkey = \"sk-b\"\ndaily_token_budget = 40\n",
    );
    let state = dir.join("state");
    let args = [
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    let mut s = TestServer::start(&args);
    let url = s.url("/v1/completions");
    let mut used = 0;
    for _ in 0..2 {
        let (status, h, body) = post_json(&url, &completion(10), Some("sk-b")).await;
        assert_eq!(status, 200, "{body}");
        used += body["usage"]["total_tokens"].as_u64().unwrap();
        assert_eq!(header(&h, "x-ratelimit-limit-tokens-day"), "40");
        assert_eq!(
            header(&h, "x-ratelimit-remaining-tokens-day"),
            (40 - used).to_string()
        );
    }
    assert!((20..40).contains(&used), "used {used}");
    s.terminate();
    assert!(
        s.wait_exit(Duration::from_secs(20))
            .is_some_and(|e| e.success())
    );
    assert!(state.join("quota-state.json").exists());

    let s = TestServer::start(&args).with_metrics_key("sk-b");
    let models = reqwest::Client::new()
        .get(s.url("/v1/models"))
        .bearer_auth("sk-b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(models.headers(), "x-ratelimit-remaining-tokens-day"),
        (40 - used).to_string()
    );
    assert_eq!(
        s.metric(r#"indus_quota_tokens_used_today{key_name="budget"}"#)
            .await,
        Some(used as f64)
    );
    // A prompt longer than what is left of today's budget is refused before it runs.
    let long = json!({"model": MODEL_NAME, "prompt": "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty", "max_tokens": 1});
    let (status, h, body) = post_json(&s.url("/v1/completions"), &long, Some("sk-b")).await;
    assert_eq!(status, 429, "{body}");
    let err = assert_error_shape(&body);
    assert_eq!(err["type"], "insufficient_quota");
    assert_eq!(err["code"], "insufficient_quota");
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    drop(s);

    // A corrupt state file: the server starts, and says which file it could not read.
    let file = state.join("quota-state.json");
    std::fs::write(&file, "{ not json").unwrap();
    let s = TestServer::start(&args);
    let path = file.display().to_string();
    assert!(
        s.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("unreadable") && l.contains(&path)),
        "{:#?}",
        s.logs()
    );
    let (status, _, body) =
        post_json(&s.url("/v1/completions"), &completion(1), Some("sk-b")).await;
    assert_eq!(status, 200, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}
