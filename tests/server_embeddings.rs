//! /v1/embeddings, /v1/rerank and /v1/models with a chat model and encoder models side by
//! side in one `indus serve` (tiny fixtures), and an encoder-only server: shapes, every
//! 400 the API promises, auth per key, audit without text, metrics.

mod common_server;

use base64::Engine as _;
use common_server::{TestServer, assert_error_shape, post_json};
use serde_json::{Value, json};

fn encoders(name: &str) -> String {
    indus::loader::repo_fixture("encoders")
        .join(name)
        .display()
        .to_string()
}

fn side_by_side(extra: &[&str]) -> TestServer {
    let emb = format!("xlmr={}", encoders("tiny-xlmr"));
    let rr = format!("reranker={}", encoders("tiny-bert-reranker"));
    let mut args = vec![
        "--embedding-model",
        emb.as_str(),
        "--embedding-model",
        rr.as_str(),
        "--max-client-batch-size",
        "8",
    ];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

async fn bad(server: &TestServer, path: &str, body: Value, param: &str) -> String {
    let (status, _, resp) = post_json(&server.url(path), &body, None).await;
    assert_eq!(status, 400, "{body} → {resp}");
    let err = assert_error_shape(&resp);
    assert_eq!(err["param"], param, "{resp}");
    err["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_embeddings_and_rerank_from_one_process() {
    let server = side_by_side(&[]);
    // /v1/models lists all three with their task.
    let models: Value = reqwest::get(server.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tasks: Vec<(String, String)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().into(),
                m["task"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [
            ("tiny".to_string(), "generate".to_string()),
            ("xlmr".into(), "embed".into()),
            ("reranker".into(), "score".into())
        ]
    );
    // Chat still works.
    let (status, _, chat) = post_json(
        &server.url("/v1/completions"),
        &json!({"model": "tiny", "prompt": "hello", "max_tokens": 4}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{chat}");
    // Embeddings: strings (English and Urdu), float and base64 agree.
    let input = json!([
        "The outage was caused by a fibre cut.",
        "شام کے وقت سگنل کمزور ہو جاتا ہے۔"
    ]);
    let (status, _, f) = post_json(
        &server.url("/v1/embeddings"),
        &json!({"model": "xlmr", "input": input}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["object"], "list");
    assert_eq!(f["model"], "xlmr");
    let data = f["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(
        (data[1]["object"].as_str(), data[1]["index"].as_u64()),
        (Some("embedding"), Some(1))
    );
    let v0: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(v0.len(), 32);
    assert!(f["usage"]["prompt_tokens"].as_u64().unwrap() > 4);
    assert_eq!(f["usage"]["prompt_tokens"], f["usage"]["total_tokens"]);
    let (_, _, b) = post_json(
        &server.url("/v1/embeddings"),
        &json!({"model": "xlmr", "input": input, "encoding_format": "base64"}),
        None,
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, v0);
    // Token ids: one array, or arrays.
    let (status, _, t) = post_json(
        &server.url("/v1/embeddings"),
        &json!({"model": "xlmr", "input": [[0, 17, 2], [0, 40, 41, 2]]}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["usage"]["prompt_tokens"], 7);
    // Rerank: sorted by score, top_n, documents echoed unless asked not to.
    let docs = json!(["Reboot the modem, then check the DSL light.", {"text": "Roaming charges apply abroad."}, "Refunds are credited to the card."]);
    let (status, _, r) = post_json(
        &server.url("/v1/rerank"),
        &json!({"model": "reranker", "query": "my internet is down", "documents": docs, "top_n": 2}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let s0 = results[0]["relevance_score"].as_f64().unwrap();
    let s1 = results[1]["relevance_score"].as_f64().unwrap();
    assert!(s0 >= s1 && (0.0..=1.0).contains(&s0), "{r}");
    let i0 = results[0]["index"].as_u64().unwrap() as usize;
    let want_text = docs[i0].as_str().or(docs[i0]["text"].as_str()).unwrap();
    assert_eq!(results[0]["document"]["text"], want_text);
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let (_, _, r2) = post_json(
        &server.url("/rerank"),
        &json!({"query": "my internet is down", "documents": docs, "return_documents": false}),
        None,
    )
    .await;
    assert_eq!(r2["results"].as_array().unwrap().len(), 3, "{r2}");
    assert!(r2["results"][0].get("document").is_none());
    assert_eq!(
        r2["results"][0]["index"], results[0]["index"],
        "same ranking without a model name"
    );
    // Metrics count the encoder work per model.
    let m = server.metrics().await;
    assert!(
        m.contains("indus_encoder_inputs_total{model=\"xlmr\"}"),
        "{m}"
    );
    assert!(
        m.contains("indus_encoder_batches_total{model=\"reranker\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pooling_requests_are_openai_shaped_400s() {
    let server = side_by_side(&[]);
    let e = "/v1/embeddings";
    bad(
        &server,
        e,
        json!({"model": "xlmr", "input": ""}),
        "input[0]",
    )
    .await;
    bad(&server, e, json!({"model": "xlmr", "input": []}), "input").await;
    bad(
        &server,
        e,
        json!({"model": "xlmr", "input": [[]]}),
        "input[0]",
    )
    .await;
    let m = bad(
        &server,
        e,
        json!({"model": "xlmr", "input": [1, 99999]}),
        "input[0]",
    )
    .await;
    assert!(m.contains("99999") && m.contains("vocabulary"), "{m}");
    let m = bad(
        &server,
        e,
        json!({"model": "xlmr", "input": vec!["a"; 9]}),
        "input",
    )
    .await;
    assert!(m.contains("limit of 8"), "{m}");
    let long = "ٹیکنیشن ٹاور پر چڑھتے وقت حفاظتی بیلٹ پہنیں۔ ".repeat(20);
    let m = bad(
        &server,
        e,
        json!({"model": "xlmr", "input": [long]}),
        "input[0]",
    )
    .await;
    assert!(
        m.contains("48") && m.contains("truncate_prompt_tokens"),
        "{m}"
    );
    let (status, _, ok) = post_json(
        &server.url(e),
        &json!({"model": "xlmr", "input": [long], "truncate_prompt_tokens": -1}),
        None,
    )
    .await;
    assert_eq!(
        (status, ok["usage"]["prompt_tokens"].as_u64()),
        (200, Some(48)),
        "{ok}"
    );
    let (_, _, ok) = post_json(
        &server.url(e),
        &json!({"model": "xlmr", "input": [long], "truncate_prompt_tokens": 10}),
        None,
    )
    .await;
    assert_eq!(ok["usage"]["prompt_tokens"], 10);
    bad(
        &server,
        e,
        json!({"model": "xlmr", "input": "a", "truncate_prompt_tokens": 49}),
        "truncate_prompt_tokens",
    )
    .await;
    let m = bad(
        &server,
        e,
        json!({"model": "xlmr", "input": "a", "dimensions": 16}),
        "dimensions",
    )
    .await;
    assert!(m.contains("Matryoshka"), "{m}");
    bad(
        &server,
        e,
        json!({"model": "xlmr", "input": "a", "encoding_format": "hex"}),
        "encoding_format",
    )
    .await;
    // The wrong model for the endpoint names the endpoint it serves.
    let m = bad(
        &server,
        e,
        json!({"model": "reranker", "input": "a"}),
        "model",
    )
    .await;
    assert!(m.contains("/v1/rerank"), "{m}");
    let m = bad(&server, e, json!({"model": "tiny", "input": "a"}), "model").await;
    assert!(m.contains("generative"), "{m}");
    let r = "/v1/rerank";
    bad(
        &server,
        r,
        json!({"model": "xlmr", "query": "q", "documents": ["d"]}),
        "model",
    )
    .await;
    bad(
        &server,
        r,
        json!({"query": "", "documents": ["d"]}),
        "query",
    )
    .await;
    bad(
        &server,
        r,
        json!({"query": "q", "documents": []}),
        "documents",
    )
    .await;
    bad(
        &server,
        r,
        json!({"query": "q", "documents": ["d", ""]}),
        "documents[1]",
    )
    .await;
    bad(
        &server,
        r,
        json!({"query": "q", "documents": ["d"], "top_n": -1}),
        "top_n",
    )
    .await;
    let (status, _, nf) = post_json(
        &server.url(e),
        &json!({"model": "nope", "input": "a"}),
        None,
    )
    .await;
    assert_eq!(status, 404, "{nf}");
    // Nothing above broke the models.
    let (status, _, _) = post_json(
        &server.url(e),
        &json!({"model": "xlmr", "input": "ok"}),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limit_encoder_models_and_the_audit_log_has_no_text() {
    let dir = std::env::temp_dir().join(format!("indus-emb-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nname = \"rag\"\nkey = \"sk-rag\"\nmodels = [\"xlmr\"]\n[[keys]]\nname = \"chat\"\nkey = \"sk-chat\"\nmodels = [\"tiny\"]\n",
    )
    .unwrap();
    let audit = dir.join("audit.jsonl");
    let server = side_by_side(&[
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    let url = server.url("/v1/embeddings");
    let secret = "customer 0300-1234567 asked about roaming";
    let (status, _, _) = post_json(&url, &json!({"model": "xlmr", "input": secret}), None).await;
    assert_eq!(status, 401);
    let (status, _, body) = post_json(
        &url,
        &json!({"model": "xlmr", "input": secret}),
        Some("sk-rag"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = post_json(
        &url,
        &json!({"model": "xlmr", "input": secret}),
        Some("sk-chat"),
    )
    .await;
    assert_eq!(status, 404, "a key without the model does not see it");
    let (status, _, _) = post_json(
        &server.url("/v1/rerank"),
        &json!({"model": "reranker", "query": secret, "documents": ["d"]}),
        Some("sk-rag"),
    )
    .await;
    assert_eq!(status, 404);
    let models: Value = reqwest::Client::new()
        .get(server.url("/v1/models"))
        .bearer_auth("sk-rag")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["xlmr"]);
    drop(server);
    let log = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok = lines
        .iter()
        .find(|l| l["endpoint"] == "/v1/embeddings" && l["status"] == 200)
        .expect("an audit line for the embedding request");
    assert_eq!(ok["key_name"], "rag");
    assert_eq!(ok["model"], "xlmr");
    assert!(ok["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(
        !log.contains("0300-1234567"),
        "no input text in the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoder_checkpoint_is_served_on_its_own() {
    let model = indus::loader::repo_fixture("encoders").join("tiny-xlmr");
    let server = TestServer::start_model(&model, &["--served-model-name", "emb"], &[]);
    let models: Value = reqwest::get(server.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "emb");
    assert_eq!(models["data"][0]["task"], "embed");
    assert_eq!(models["data"][0]["max_model_len"], 48);
    let (status, _, body) = post_json(
        &server.url("/v1/embeddings"),
        &json!({"input": "hello"}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "emb");
    let (status, _, body) = post_json(
        &server.url("/v1/chat/completions"),
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/embeddings")
    );
    let ready = reqwest::get(server.url("/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decoder_served_with_task_embed_answers_embeddings_not_chat() {
    let model = indus::loader::repo_fixture("tiny-qwen3");
    let server = TestServer::start_model(
        &model,
        &[
            "--task",
            "embed",
            "--served-model-name",
            "qwen3-emb",
            "--max-model-len",
            "512",
            "--max-num-batched-tokens",
            "64",
        ],
        &[],
    );
    let path = indus::loader::repo_fixture("encoders").join("decoder-embed-golden.json");
    let g: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let g = &g["tiny-qwen3"];
    let (status, _, body) = post_json(
        &server.url("/v1/embeddings"),
        &json!({"model": "qwen3-emb", "input": g["inputs"]}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tokens: u64 = g["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(body["usage"]["prompt_tokens"].as_u64(), Some(tokens));
    for (d, want) in body["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(g["embeddings"].as_array().unwrap())
    {
        let got: Vec<f64> = d["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        assert!(err < 1e-4, "max abs difference {err}");
    }
    let models: Value = reqwest::get(server.url("/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["task"], "embed");
    let (status, _, body) = post_json(
        &server.url("/v1/chat/completions"),
        &json!({"model": "qwen3-emb", "messages": [{"role": "user", "content": "hi"}]}),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/embeddings")
    );
    let too_long: Vec<u32> = (0..513).map(|i| 3 + i).collect();
    bad(
        &server,
        "/v1/embeddings",
        json!({"input": too_long}),
        "input[0]",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matryoshka_models_truncate_and_renormalize() {
    // The tiny XLM-R fixture, declared Matryoshka-trained for 16 dimensions.
    let src = indus::loader::repo_fixture("encoders").join("tiny-xlmr");
    let dir = std::env::temp_dir().join(format!("indus-mrl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&src, &dir);
    let cfg_path = dir.join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["matryoshka_dimensions"] = json!([16]);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let server = TestServer::start_model(&dir, &["--served-model-name", "mrl"], &[]);
    let url = server.url("/v1/embeddings");
    let (_, _, full) = post_json(&url, &json!({"input": "roaming charges"}), None).await;
    let (status, _, cut) = post_json(
        &url,
        &json!({"input": "roaming charges", "dimensions": 16}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{cut}");
    let full: Vec<f64> = full["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let cut: Vec<f64> = cut["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!((full.len(), cut.len()), (32, 16));
    let norm = full[..16].iter().map(|x| x * x).sum::<f64>().sqrt();
    for (c, f) in cut.iter().zip(&full[..16]) {
        assert!(
            (c - f / norm).abs() < 1e-6,
            "the first 16 components, renormalized"
        );
    }
    let m = bad(
        &server,
        "/v1/embeddings",
        json!({"input": "a", "dimensions": 8}),
        "dimensions",
    )
    .await;
    assert!(m.contains("[16]"), "{m}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
