//! /openapi.json over real HTTP: served without a key, and the live server answers each
//! documented operation only with statuses the document lists for it, errors in OpenAI's
//! shape. (schemathesis explores the same document much further in CI:
//! scripts/schemathesis-check.sh.)

mod common_server;

use common_server::{TestServer, assert_error_shape, init_tls, post_json};
use serde_json::{Value, json};

const KEY: &str = "sk-openapi-test";

async fn document(s: &TestServer) -> Value {
    init_tls();
    let resp = reqwest::get(s.url("/openapi.json")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    resp.json().await.unwrap()
}

fn documented(doc: &Value, path: &str, method: &str, status: u16) -> bool {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .contains_key(&status.to_string())
}

#[tokio::test]
async fn the_document_is_open_and_the_server_keeps_to_it() {
    let s = TestServer::start(&["--api-key", KEY]);
    let doc = document(&s).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let http = reqwest::Client::new();
    let paths = doc["paths"].as_object().unwrap().clone();
    for (path, item) in &paths {
        if path == "/openapi.json" {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let url = s.url(&path.replace("{id}", "no-such-model"));
            let answers: Vec<(u16, Value)> = match method.as_str() {
                "post" => {
                    let mut out = Vec::new();
                    // Empty, wrong-typed and keyless bodies: each must be a documented error.
                    for (body, key) in [
                        (json!({}), Some(KEY)),
                        (
                            json!({"messages": 3, "prompt": {}, "input": [[-1]]}),
                            Some(KEY),
                        ),
                        (json!({}), None),
                    ] {
                        let (status, _, v) = post_json(&url, &body, key).await;
                        out.push((status, v));
                    }
                    out
                }
                "get" => {
                    let resp = http.get(&url).bearer_auth(KEY).send().await.unwrap();
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap();
                    vec![(status, serde_json::from_str(&text).unwrap_or(Value::Null))]
                }
                other => panic!("unexpected method {other}"),
            };
            for (status, body) in answers {
                assert!(
                    documented(&doc, path, method, status),
                    "{method} {path} answered {status}, which the document does not list: {body}"
                );
                if status >= 400 {
                    assert_error_shape(&body);
                }
            }
        }
    }
}
