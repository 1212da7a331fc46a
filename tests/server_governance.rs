//! Named API keys with model lists, per-key metrics, and the audit log.

mod common_server;

use common_server::{TestServer, post_json};
use serde_json::{Value, json};
use std::path::PathBuf;

const CANARY_PROMPT: &str = "CANARY-PROMPT-7f3a do not log me";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("indus-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn keys_file(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("keys.toml");
    std::fs::write(
        &p,
        r#"
[[keys]]
name = "team-a"
key = "sk-team-a-secret"
models = ["tiny"]

[[keys]]
name = "team-b"
key = "sk-team-b-secret"
models = ["tiny-alias"]

[[keys]]
name = "ops"
key = "sk-ops-secret"
"#,
    )
    .unwrap();
    p
}

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}

fn body(model: &str, stream: bool) -> Value {
    json!({"model": model, "prompt": CANARY_PROMPT, "max_tokens": 5, "stream": stream})
}

#[tokio::test]
async fn keys_limit_models_and_everything_is_audited_without_content() {
    let dir = temp_dir("governance");
    let keys = keys_file(&dir);
    let audit = dir.join("logs/audit.jsonl");
    let s = TestServer::start(&[
        "--served-model-name",
        "tiny",
        "--served-model-name",
        "tiny-alias",
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ])
    .with_metrics_key("sk-ops-secret");
    let url = s.url("/v1/completions");
    let a = Some("sk-team-a-secret");
    let b = Some("sk-team-b-secret");

    let (status, headers, ok) = post_json(&url, &body("tiny", false), a).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(headers["x-request-id"], ok["id"].as_str().unwrap());
    let completion_text = ok["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(post_json(&url, &body("tiny-alias", false), a).await.0, 404);
    assert_eq!(post_json(&url, &body("tiny", false), b).await.0, 404);
    assert_eq!(post_json(&url, &body("tiny-alias", true), b).await.0, 200);
    assert_eq!(
        post_json(&url, &body("tiny-alias", false), Some("sk-ops-secret"))
            .await
            .0,
        200
    );
    assert_eq!(
        post_json(&url, &body("tiny", false), Some("sk-wrong"))
            .await
            .0,
        401
    );

    // /v1/models shows each key only its models.
    let ids = |key: &'static str| {
        let s = &s;
        async move {
            let m: Value = reqwest::Client::new()
                .get(s.url("/v1/models"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            m["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("sk-team-a-secret").await, vec!["tiny"]);
    assert_eq!(ids("sk-team-b-secret").await, vec!["tiny-alias"]);
    assert_eq!(ids("sk-ops-secret").await, vec!["tiny", "tiny-alias"]);

    // Per-key metrics.
    let m = s.metrics().await;
    let v = |sample: &str| common_server::metric_value(&m, sample).unwrap_or(0.0);
    assert_eq!(v(r#"indus_api_key_requests_total{key_name="team-a"}"#), 2.0);
    assert_eq!(v(r#"indus_api_key_requests_total{key_name="team-b"}"#), 2.0);
    assert_eq!(v(r#"indus_api_key_requests_total{key_name="ops"}"#), 1.0);
    let usage = &ok["usage"];
    assert_eq!(
        v(r#"indus_api_key_tokens_total{key_name="team-a",kind="prompt"}"#),
        usage["prompt_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        v(r#"indus_api_key_tokens_total{key_name="team-a",kind="completion"}"#),
        usage["completion_tokens"].as_f64().unwrap()
    );
    assert_eq!(
        v(r#"indus_requests_total{finish_reason="error",status="404"}"#),
        2.0
    );
    assert_eq!(
        v(r#"indus_requests_total{finish_reason="error",status="401"}"#),
        1.0
    );

    // The audit log: one line per request, who/what/cost, never content or keys.
    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let first = &lines[0];
    assert_eq!(first["request_id"], ok["id"]);
    assert_eq!(first["key_name"], "team-a");
    assert_eq!(first["model"], "tiny");
    assert_eq!(first["endpoint"], "/v1/completions");
    assert_eq!(first["status"], 200);
    assert_eq!(first["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(first["completion_tokens"], usage["completion_tokens"]);
    assert!(first["finish_reason"] == "length" || first["finish_reason"] == "stop");
    assert!(first["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(
        first["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let time = first["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    assert!(first.get("prompt").is_none() && first.get("completion").is_none());
    let statuses: Vec<u64> = lines
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 404, 404, 200, 200, 401]);
    assert_eq!(lines[3]["stream"], true);
    assert_eq!(lines[5]["key_name"], Value::Null);
    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(!raw.contains("CANARY"), "the audit log holds prompt text");
    assert!(completion_text.len() < 3 || !raw.contains(&completion_text));
    assert!(!raw.contains("secret"), "the audit log holds a key");
    // Nor do the server's own logs.
    let logs = s.logs().join("\n");
    assert!(!logs.contains("CANARY") && !logs.contains("secret"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn audit_log_content_is_opt_in() {
    let dir = temp_dir("audit-content");
    let audit = dir.join("audit.jsonl");
    let s = TestServer::start(&[
        "--audit-log",
        audit.to_str().unwrap(),
        "--audit-log-content",
    ]);
    let (status, _, ok) = post_json(&s.url("/v1/completions"), &body("tiny", false), None).await;
    assert_eq!(status, 200);
    let (status, _, chat) = post_json(
        &s.url("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": CANARY_PROMPT}], "max_tokens": 4}),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["key_name"], "anonymous");
    assert_eq!(lines[0]["prompt"], CANARY_PROMPT);
    assert_eq!(lines[0]["completion"][0], ok["choices"][0]["text"]);
    assert_eq!(lines[1]["prompt"][0]["content"], CANARY_PROMPT);
    assert_eq!(
        lines[1]["completion"][0],
        chat["choices"][0]["message"]["content"]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn client_chosen_fields_are_capped_in_the_audit_log() {
    let dir = temp_dir("audit-capped");
    let audit = dir.join("audit.jsonl");
    let s = TestServer::start(&["--audit-log", audit.to_str().unwrap()]);
    let mut b = body("tiny", false);
    b["user"] = json!("u".repeat(3_000_000));
    let resp = reqwest::Client::new()
        .post(s.url("/v1/completions"))
        .header("x-forwarded-for", "f".repeat(10_000))
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let lines = loop {
        let lines = audit_lines(&audit);
        if !lines.is_empty() || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["user"].as_str().unwrap().len(), 256);
    assert_eq!(lines[0]["forwarded_for"].as_str().unwrap().len(), 256);
    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(raw.len() < 2048, "{} bytes", raw.len());
    let _ = std::fs::remove_dir_all(dir);
}
