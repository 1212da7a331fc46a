//! Structured output over HTTP on the random-weight fixture: whatever the weights, the text
//! must match the constraint, for each spelling of it and on both endpoints.

mod common_server;

use common_server::{MODEL_NAME, TestServer, post_json};
use serde_json::json;

async fn chat(s: &TestServer, extra: serde_json::Value) -> (u16, serde_json::Value) {
    let mut body = json!({"model": MODEL_NAME, "max_tokens": 64, "temperature": 1.0, "seed": 7,
        "messages": [{"role": "user", "content": "Answer."}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, _, body) = post_json(&s.url("/v1/chat/completions"), &body, None).await;
    (status, body)
}

fn content(body: &serde_json::Value, i: usize) -> String {
    body["choices"][i]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content: {body}"))
        .to_string()
}

#[tokio::test]
async fn choices_regexes_and_schemas_hold_whatever_the_weights() {
    let s = TestServer::start(&[]);

    let (status, body) = chat(
        &s,
        json!({"n": 3, "structured_outputs": {"choice": ["yes", "no", "maybe not"]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for i in 0..3 {
        let c = content(&body, i);
        assert!(["yes", "no", "maybe not"].contains(&c.as_str()), "{c:?}");
        assert_eq!(body["choices"][i]["finish_reason"], "stop", "{body}");
    }

    let (status, body) = chat(&s, json!({"guided_regex": "[0-9]{3}-[a-c]{2}"})).await;
    assert_eq!(status, 200, "{body}");
    let c = content(&body, 0);
    let b = c.as_bytes();
    assert!(
        b.len() == 6
            && b[..3].iter().all(u8::is_ascii_digit)
            && b[3] == b'-'
            && b[4..].iter().all(|x| (b'a'..=b'c').contains(x)),
        "{c:?}"
    );

    let schema = json!({"type": "object", "properties": {
        "ok": {"type": "boolean"}, "n": {"type": "integer"}}, "required": ["ok", "n"],
        "additionalProperties": false});
    let (status, body) = chat(
        &s,
        json!({"max_tokens": 200, "response_format": {"type": "json_schema",
            "json_schema": {"name": "r", "schema": schema, "strict": true}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let c = content(&body, 0);
    if body["choices"][0]["finish_reason"] == "stop" {
        let v: serde_json::Value =
            serde_json::from_str(&c).unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert!(v["ok"].is_boolean() && v["n"].is_i64(), "{v}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
    } else {
        // Cut at max_tokens (a random model may write a long integer): still a prefix.
        assert!(c.starts_with("{\""), "{c:?}");
    }

    // Completions take the same fields.
    let (status, _, body) = post_json(
        &s.url("/v1/completions"),
        &json!({"model": MODEL_NAME, "prompt": "Pick", "max_tokens": 8,
                "guided_choice": ["alpha", "beta"]}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let t = body["choices"][0]["text"].as_str().unwrap();
    assert!(t == "alpha" || t == "beta", "{t:?}");
}

#[tokio::test]
async fn bad_constraints_are_400s_and_the_server_goes_on() {
    let s = TestServer::start(&[]);
    for (extra, param) in [
        (json!({"guided_regex": "([a-z"}), "guided_regex"),
        (
            json!({"structured_outputs": {"grammar": "start: nope_undefined"}}),
            "structured_outputs",
        ),
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format",
        ),
        (
            json!({"response_format": {"type": "json_object"}, "guided_choice": ["a"]}),
            "guided_choice",
        ),
    ] {
        let (status, body) = chat(&s, extra.clone()).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let (status, body) = chat(&s, json!({"response_format": {"type": "json_object"}})).await;
    assert_eq!(status, 200, "{body}");
    assert!(content(&body, 0).starts_with('{'), "{body}");
}
