//! Every error status the API promises, with OpenAI's error shape, over real HTTP.

mod common_server;

use async_openai::error::OpenAIError;
use async_openai::types::completions::CreateCompletionRequestArgs;
use common_server::{MODEL_NAME, TestServer, assert_error_shape, post_json};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;

fn completion(extra: Value) -> Value {
    let mut body = json!({"model": MODEL_NAME, "prompt": "Hello", "max_tokens": 4});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn chat(extra: Value) -> Value {
    let mut body = json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn invalid_params_get_400_and_never_disturb_other_requests() {
    let s = TestServer::start(&[]);
    // A long stream in flight while bad requests come and go.
    let http = reqwest::Client::new();
    let streaming = http
        .post(s.url("/v1/completions"))
        .json(&completion(
            json!({"max_tokens": 120, "ignore_eos": true, "stream": true}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(streaming.status(), 200);

    let completions = s.url("/v1/completions");
    let chats = s.url("/v1/chat/completions");
    let cases: Vec<(&str, Value, Option<&str>)> = vec![
        (
            &completions,
            completion(json!({"max_tokens": -1})),
            Some("max_tokens"),
        ),
        (
            &completions,
            completion(json!({"max_tokens": 0})),
            Some("max_tokens"),
        ),
        (
            &completions,
            completion(json!({"temperature": 2.5})),
            Some("temperature"),
        ),
        (
            &completions,
            completion(json!({"temperature": -0.1})),
            Some("temperature"),
        ),
        (
            &completions,
            completion(json!({"top_p": 0.0})),
            Some("top_p"),
        ),
        (&completions, completion(json!({"n": 0})), Some("n")),
        (
            &completions,
            completion(json!({"top_k": -3})),
            Some("top_k"),
        ),
        (
            &completions,
            completion(json!({"presence_penalty": 3.0})),
            Some("presence_penalty"),
        ),
        (
            &completions,
            completion(json!({"logprobs": -1})),
            Some("logprobs"),
        ),
        (
            &completions,
            completion(json!({"logprobs": 21})),
            Some("logprobs"),
        ),
        (
            &completions,
            completion(json!({"max_tokens": 300})),
            Some("max_tokens"),
        ),
        (
            &completions,
            completion(json!({"suffix": "and then"})),
            Some("suffix"),
        ),
        (
            &completions,
            completion(json!({"prompt": 5})),
            Some("prompt"),
        ),
        (
            &completions,
            completion(json!({"prompt": []})),
            Some("prompt"),
        ),
        (
            &completions,
            completion(json!({"prompt": [-1, 2]})),
            Some("prompt"),
        ),
        (
            &completions,
            completion(json!({"prompt": [1, 99999]})),
            Some("prompt"),
        ),
        (
            &completions,
            completion(json!({"prompt": [[1, 2], "x"]})),
            Some("prompt"),
        ),
        (
            &completions,
            completion(json!({"stream_options": {"include_usage": true}})),
            Some("stream_options"),
        ),
        (
            &completions,
            completion(json!({"logit_bias": {"50256": -100}})),
            Some("logit_bias"),
        ),
        (
            &completions,
            completion(json!({"echo": true, "logprobs": 1})),
            Some("echo"),
        ),
        (
            &completions,
            completion(json!({"temperature": "hot"})),
            None,
        ),
        (&completions, json!({"model": MODEL_NAME}), None),
        (&chats, chat(json!({"messages": []})), Some("messages")),
        (
            &chats,
            chat(json!({"max_completion_tokens": -3})),
            Some("max_completion_tokens"),
        ),
        (
            &chats,
            chat(json!({"top_logprobs": 2})),
            Some("top_logprobs"),
        ),
        (
            &chats,
            chat(json!({"tools": [{"type": "function", "function": {"name": 7}}]})),
            Some("tools"),
        ),
        (
            &chats,
            chat(json!({"response_format": {"type": "xml"}})),
            Some("response_format"),
        ),
        (
            &chats,
            chat(
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            ),
            Some("messages"),
        ),
        (
            // The Llama 2 template raises on non-alternating roles.
            &chats,
            chat(
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}),
            ),
            Some("messages"),
        ),
        (&chats, chat(json!({"max_tokens": 250})), Some("max_tokens")),
    ];
    let total = cases.len();
    for (url, body, param) in cases {
        let (status, _, resp) = post_json(url, &body, None).await;
        assert_eq!(status, 400, "{body} -> {resp}");
        let err = assert_error_shape(&resp);
        assert_eq!(err["type"], "invalid_request_error", "{resp}");
        assert_eq!(err["param"].as_str(), param, "{body} -> {resp}");
    }
    // Not JSON at all.
    let resp = http
        .post(&completions)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_error_shape(&resp.json().await.unwrap());

    // The context-length message says what went wrong.
    let (_, _, resp) = post_json(&completions, &completion(json!({"max_tokens": 300})), None).await;
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 256")
    );

    // The SDK surfaces the same error object.
    let req = CreateCompletionRequestArgs::default()
        .model(MODEL_NAME)
        .prompt("Hi")
        .temperature(5.0)
        .build()
        .unwrap();
    match s.openai().completions().create(req).await {
        Err(OpenAIError::ApiError(e)) => {
            assert_eq!(e.api_error.param.as_deref(), Some("temperature"));
            assert_eq!(e.api_error.r#type.as_deref(), Some("invalid_request_error"));
        }
        other => panic!("expected an API error, got {other:?}"),
    }

    // Unknown fields are tolerated, as OpenAI does.
    let (status, _, resp) = post_json(
        &completions,
        &completion(json!({"frobnicate": true, "metadata": {"a": 1}})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{resp}");

    // The stream that was running all along finished whole.
    let body = streaming.text().await.unwrap();
    let events = common_server::sse_data(&body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let finish: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap()["choices"][0]["finish_reason"].clone())
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![json!("length")]);

    let bad = s
        .metric(r#"indus_requests_total{finish_reason="error",status="400"}"#)
        .await
        .unwrap();
    assert!(bad >= total as f64, "{bad} < {total}");
}

#[tokio::test]
async fn unknown_model_route_and_method() {
    let s = TestServer::start(&[]);
    let (status, _, resp) = post_json(
        &s.url("/v1/completions"),
        &completion(json!({"model": "gpt-4"})),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let err = assert_error_shape(&resp);
    assert_eq!(err["code"], "model_not_found");
    assert_eq!(err["param"], "model");
    assert!(err["message"].as_str().unwrap().contains("gpt-4"));

    let (status, _, resp) = post_json(
        &s.url("/v1/chat/completions"),
        &chat(json!({"model": "nope"})),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_error_shape(&resp);

    let resp = reqwest::get(s.url("/v1/models/nope")).await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = reqwest::get(s.url(&format!("/v1/models/{MODEL_NAME}")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let card: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(card["architecture"], "LlamaForCausalLM", "{card}");

    let resp = reqwest::get(s.url("/v1/audio/speech")).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_error_shape(&resp.json().await.unwrap());

    let resp = reqwest::get(s.url("/v1/completions")).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_error_shape(&resp.json().await.unwrap());
}

#[tokio::test]
async fn oversize_body_gets_413() {
    let s = TestServer::start(&["--max-request-body-bytes", "2KiB"]);
    let big = "word ".repeat(1000);
    let (status, _, resp) = post_json(
        &s.url("/v1/completions"),
        &completion(json!({"prompt": big})),
        None,
    )
    .await;
    assert_eq!(status, 413);
    let err = assert_error_shape(&resp);
    assert_eq!(err["code"], "request_too_large");
    let (status, _, resp) =
        post_json(&s.url("/v1/completions"), &completion(json!({})), None).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn api_keys_are_required_when_set() {
    let s = TestServer::start(&["--api-key", "sk-one", "--api-key", "sk-two"]);
    let url = s.url("/v1/completions");
    let (status, headers, resp) = post_json(&url, &completion(json!({})), None).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(assert_error_shape(&resp)["code"], "invalid_api_key");
    let (status, _, _) = post_json(&url, &completion(json!({})), Some("sk-on")).await;
    assert_eq!(status, 401);
    let (status, _, _) = post_json(&url, &completion(json!({})), Some("sk-one-")).await;
    assert_eq!(status, 401);
    let (status, _, resp) = post_json(&url, &completion(json!({})), Some("sk-two")).await;
    assert_eq!(status, 200, "{resp}");

    // The SDK with the key works; /v1/models needs it too.
    assert!(s.openai_with_key("sk-one").models().list().await.is_ok());
    assert!(matches!(
        s.openai_with_key("wrong").models().list().await,
        Err(OpenAIError::ApiError(_))
    ));
    // Probes stay open; /metrics (per-key names and usage) needs a key.
    for path in ["/health", "/ready"] {
        assert_eq!(
            reqwest::get(s.url(path)).await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let m = reqwest::get(s.url("/metrics")).await.unwrap();
    assert_eq!(m.status(), 401);
    assert_eq!(
        assert_error_shape(&m.json().await.unwrap())["code"],
        "invalid_api_key"
    );
    let m = get_with_key(&s.url("/metrics"), Some("sk-two")).await;
    assert_eq!(m.status(), 200);
    assert!(m.text().await.unwrap().contains("key_name=\"key-2\""));
    // Unknown routes and wrong methods say nothing before authentication: 401 first,
    // then 404/405 in OpenAI's shape.
    for (method, path, authed) in [
        (reqwest::Method::GET, "/v1/audio/speech", 404),
        (reqwest::Method::GET, "/v1/completions", 405),
        (reqwest::Method::DELETE, "/v1/models", 405),
        (reqwest::Method::GET, "/admin", 404),
    ] {
        for (key, want) in [(None, 401), (Some("wrong"), 401), (Some("sk-one"), authed)] {
            let mut req = reqwest::Client::new().request(method.clone(), s.url(path));
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), want, "{method} {path} key {key:?}");
            assert_error_shape(&resp.json().await.unwrap());
        }
    }
    // A wrong method on a probe is a 405 in the same shape (probes need no key).
    let resp = reqwest::Client::new()
        .post(s.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_error_shape(&resp.json().await.unwrap());
    // Keys never reach the logs.
    let logs = s.logs().join("\n");
    assert!(!logs.contains("sk-one") && !logs.contains("sk-two"));
    drop(s);

    // INDUS_API_KEYS, comma-separated.
    let s = TestServer::start_with_env(&[], &[("INDUS_API_KEYS", "env-a,env-b")]);
    let url = s.url("/v1/completions");
    assert_eq!(post_json(&url, &completion(json!({})), None).await.0, 401);
    assert_eq!(
        post_json(&url, &completion(json!({})), Some("env-b"))
            .await
            .0,
        200
    );
}

async fn get_with_key(url: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

/// `--metrics-port`: /metrics on its own listener without a key; the API port then has
/// none (404, after the key check).
#[tokio::test]
async fn metrics_port_serves_metrics_apart_from_the_api() {
    let s = TestServer::start(&["--api-key", "sk-one", "--metrics-port", "0"]);
    let addr = s
        .metrics_addr
        .expect("the metrics listener's address is logged");
    assert_ne!(addr, s.addr);
    let (status, _, _) = post_json(
        &s.url("/v1/completions"),
        &completion(json!({})),
        Some("sk-one"),
    )
    .await;
    assert_eq!(status, 200);
    let m = get_with_key(&format!("http://{addr}/metrics"), None).await;
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(
        text.contains(r#"indus_api_key_requests_total{key_name="key-1"} 1"#),
        "{text}"
    );
    let r = get_with_key(&format!("http://{addr}/v1/models"), None).await;
    assert_eq!(r.status(), 404, "the metrics port serves no API");
    assert_eq!(get_with_key(&s.url("/metrics"), None).await.status(), 401);
    let r = get_with_key(&s.url("/metrics"), Some("sk-one")).await;
    assert_eq!(r.status(), 404);
    assert_error_shape(&r.json().await.unwrap());
}

#[tokio::test]
async fn a_flood_gets_429_with_retry_after() {
    let s = TestServer::start(&["--max-num-seqs", "1", "--max-waiting-requests", "1"]);
    let url = s.url("/v1/completions");
    let body = completion(json!({"max_tokens": 100, "ignore_eos": true}));
    let results = futures::future::join_all((0..12).map(|_| post_json(&url, &body, None))).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let limited: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert!(ok >= 1, "some requests are served");
    assert!(
        !limited.is_empty(),
        "statuses: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(ok + limited.len(), 12, "only 200s and 429s");
    for (_, headers, resp) in &limited {
        // The queue's expected drain time, jittered: whole seconds in [1, 60].
        let secs: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "{secs}");
        let err = assert_error_shape(resp);
        assert_eq!(err["type"], "rate_limit_error");
    }
    // Served requests ran to the end; the queue drains and new requests pass again.
    for (_, _, resp) in results.iter().filter(|r| r.0 == 200) {
        assert_eq!(resp["usage"]["completion_tokens"], 100);
    }
    assert_eq!(post_json(&url, &completion(json!({})), None).await.0, 200);
    let n429 = s
        .wait_metric(
            r#"indus_requests_total{finish_reason="error",status="429"}"#,
            Duration::from_secs(5),
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(n429 as usize, limited.len());

    // A streamed request refused before it starts is a plain 429 too. Two long streams fill
    // the running slot and the waiting one first (each answered before the next is sent, so a
    // loaded machine cannot let one finish before the others arrive), then four more come.
    let mut b = body.clone();
    b["stream"] = json!(true);
    b["max_tokens"] = json!(240);
    let http = reqwest::Client::new();
    let mut held = Vec::new();
    for _ in 0..2 {
        let r = http.post(&url).json(&b).send().await.unwrap();
        assert_eq!(r.status(), 200);
        held.push(r);
    }
    let streams = (0..4).map(|_| http.post(&url).json(&b).send());
    let statuses: Vec<u16> = futures::stream::iter(streams)
        .buffer_unordered(4)
        .map(|r| r.unwrap().status().as_u16())
        .collect()
        .await;
    assert!(statuses.contains(&429), "{statuses:?}");
    drop(held);
}
