//! Tool calling over HTTP on the random-weight fixture, with the shipped Hermes template:
//! whatever the weights, `required` and named choices must give calls whose arguments match
//! the function's schema, streaming must add up to the non-streamed answer, and bad tool
//! fields must be 400s naming the field.

mod common;
mod common_server;

use common_server::{MODEL_NAME, TestServer, post_json, sse_data};
use serde_json::{Value, json};

fn template() -> String {
    format!(
        "{}/templates/tool_chat_hermes.jinja",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The shipped tool template, and room for the tools in the prompt.
fn server_args() -> Vec<String> {
    [
        "--chat-template",
        &template(),
        "--max-model-len",
        "2048",
        "--num-kv-blocks",
        "512",
    ]
    .map(String::from)
    .to_vec()
}

fn start() -> TestServer {
    let args = server_args();
    TestServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Two functions: one flat with enums and bounds, one with a nested object and an array.
fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "enum": ["Lahore", "Karachi", "Quetta"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "days"], "additionalProperties": false}}},
        {"type": "function", "function": {
            "name": "open_ticket",
            "parameters": {"type": "object", "properties": {
                "customer": {"type": "object", "properties": {
                    "msisdn": {"type": "string", "pattern": "^03[0-9]{9}$"},
                    "tier": {"type": "string", "enum": ["prepaid", "postpaid"]}},
                    "required": ["msisdn", "tier"], "additionalProperties": false},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["billing", "network", "sim"]},
                    "minItems": 1, "maxItems": 3},
                "urgent": {"type": "boolean"}},
                "required": ["customer", "tags", "urgent"], "additionalProperties": false}}}
    ])
}

fn keys(o: &serde_json::Map<String, Value>) -> Vec<&str> {
    o.keys().map(String::as_str).collect()
}

/// The arguments of a call checked against [`tools`]' schemas by hand.
fn check_arguments(name: &str, arguments: &str) {
    let a: Value = serde_json::from_str(arguments)
        .unwrap_or_else(|e| panic!("{name} arguments do not parse ({e}): {arguments}"));
    let o = a
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {a}"));
    match name {
        "get_weather" => {
            assert!(
                ["Lahore", "Karachi", "Quetta"].contains(&o["city"].as_str().unwrap()),
                "{a}"
            );
            let days = o["days"].as_i64().unwrap();
            assert!((1..=7).contains(&days), "{a}");
            if let Some(u) = o.get("unit") {
                assert!(
                    ["celsius", "fahrenheit"].contains(&u.as_str().unwrap()),
                    "{a}"
                );
            }
            assert!(
                keys(o).iter().all(|k| ["city", "days", "unit"].contains(k)),
                "{a}"
            );
        }
        "open_ticket" => {
            let c = o["customer"].as_object().unwrap();
            let msisdn = c["msisdn"].as_str().unwrap();
            assert!(
                msisdn.len() == 11
                    && msisdn.starts_with("03")
                    && msisdn.bytes().all(|b| b.is_ascii_digit()),
                "{a}"
            );
            assert!(
                ["prepaid", "postpaid"].contains(&c["tier"].as_str().unwrap()),
                "{a}"
            );
            assert_eq!(c.len(), 2, "{a}");
            let tags = o["tags"].as_array().unwrap();
            assert!((1..=3).contains(&tags.len()), "{a}");
            for t in tags {
                assert!(
                    ["billing", "network", "sim"].contains(&t.as_str().unwrap()),
                    "{a}"
                );
            }
            assert!(o["urgent"].is_boolean(), "{a}");
            assert_eq!(o.len(), 3, "{a}");
        }
        other => panic!("unknown function {other}"),
    }
}

async fn chat(s: &TestServer, extra: Value) -> (u16, Value) {
    let mut body = json!({"model": MODEL_NAME, "max_tokens": 400, "temperature": 1.0, "seed": 11,
        "messages": [{"role": "user", "content": "Is the network down in Quetta?"}],
        "tools": tools()});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, _, body) = post_json(&s.url("/v1/chat/completions"), &body, None).await;
    (status, body)
}

/// (name, arguments) of each call of choice `i`.
fn calls(body: &Value, i: usize) -> Vec<(String, String)> {
    body["choices"][i]["message"]["tool_calls"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool_calls: {body}"))
        .iter()
        .map(|c| {
            assert_eq!(c["type"], "function", "{c}");
            let id = c["id"].as_str().unwrap();
            assert!(id.starts_with("call_"), "{id}");
            (
                c["function"]["name"].as_str().unwrap().to_string(),
                c["function"]["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn required_and_named_choices_give_arguments_that_match_the_schema() {
    let s = start();

    // Parallel calls: the grammar bounds each call, not how many a random model chains, so a
    // choice may run into max_tokens; every call it finished must still be valid.
    let (status, body) = chat(&s, json!({"tool_choice": "required", "n": 4})).await;
    assert_eq!(status, 200, "{body}");
    let mut finished = 0;
    for i in 0..4 {
        let finish = body["choices"][i]["finish_reason"].as_str().unwrap();
        assert!(["tool_calls", "length"].contains(&finish), "{body}");
        finished += usize::from(finish == "tool_calls");
        let got = calls(&body, i);
        assert!(!got.is_empty());
        for (name, args) in got {
            check_arguments(&name, &args);
        }
    }
    assert!(finished > 0, "no choice closed its array of calls: {body}");

    let (status, body) = chat(
        &s,
        json!({"tool_choice": "required", "parallel_tool_calls": false, "n": 3, "seed": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for i in 0..3 {
        let got = calls(&body, i);
        assert_eq!(got.len(), 1, "{body}");
        check_arguments(&got[0].0, &got[0].1);
    }

    for name in ["open_ticket", "get_weather"] {
        let (status, body) = chat(
            &s,
            json!({"tool_choice": {"type": "function", "function": {"name": name}}, "n": 3}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        for i in 0..3 {
            let got = calls(&body, i);
            assert_eq!(got.len(), 1, "{body}");
            assert_eq!(got[0].0, name);
            check_arguments(name, &got[0].1);
            assert!(body["choices"][i]["message"]["content"].is_null(), "{body}");
        }
    }
}

/// Content and calls (name, arguments) put together from a streamed answer's deltas.
fn assemble(events: &[String]) -> (String, Vec<(String, String)>, Option<String>) {
    let mut content = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = None;
    for e in events.iter().filter(|e| e.as_str() != "[DONE]") {
        let v: Value = serde_json::from_str(e).unwrap();
        let Some(c) = v["choices"].get(0) else {
            continue;
        };
        if let Some(t) = c["delta"]["content"].as_str() {
            content.push_str(t);
        }
        for d in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = d["index"].as_u64().unwrap() as usize;
            if let Some(name) = d["function"]["name"].as_str() {
                assert_eq!(i, calls.len(), "calls begin in order: {e}");
                assert!(d["id"].as_str().unwrap().starts_with("call_"), "{e}");
                assert_eq!(d["type"], "function", "{e}");
                calls.push((name.to_string(), String::new()));
            }
            if let Some(a) = d["function"]["arguments"].as_str() {
                calls[i].1.push_str(a);
            }
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    (content, calls, finish)
}

#[tokio::test]
async fn streamed_calls_add_up_to_the_non_streamed_answer() {
    let s = start();
    let named = json!({"type": "function", "function": {"name": "open_ticket"}});
    for choice in [json!("required"), named, json!("auto"), json!("none")] {
        let (status, whole) = chat(&s, json!({"tool_choice": choice, "max_tokens": 120})).await;
        assert_eq!(status, 200, "{whole}");
        let body = json!({"model": MODEL_NAME, "max_tokens": 120, "temperature": 1.0, "seed": 11,
            "messages": [{"role": "user", "content": "Is the network down in Quetta?"}],
            "tools": tools(), "tool_choice": choice, "stream": true});
        let (status, text) =
            common_server::post_text(&s.url("/v1/chat/completions"), &body, None).await;
        assert_eq!(status, 200, "{text}");
        let (content, streamed, finish) = assemble(&sse_data(&text));
        let message = &whole["choices"][0]["message"];
        let want_calls = message["tool_calls"]
            .as_array()
            .map(|_| calls(&whole, 0))
            .unwrap_or_default();
        assert_eq!(streamed, want_calls, "{choice}: {text}");
        assert_eq!(
            content,
            message["content"].as_str().unwrap_or(""),
            "{choice}"
        );
        assert_eq!(
            finish.as_deref(),
            whole["choices"][0]["finish_reason"].as_str(),
            "{choice}"
        );
    }
}

#[tokio::test]
async fn tools_reach_the_template_and_conversations_with_calls_render() {
    let s = start();
    let prompt_tokens = |b: &Value| b["usage"]["prompt_tokens"].as_u64().unwrap();
    let (status, without) = chat(&s, json!({"tools": [], "max_tokens": 1})).await;
    assert_eq!(status, 200, "{without}");
    let (status, with) = chat(&s, json!({"tool_choice": "none", "max_tokens": 1})).await;
    assert_eq!(status, 200, "{with}");
    assert!(
        prompt_tokens(&with) > prompt_tokens(&without) + 100,
        "{with} {without}"
    );
    assert!(with["choices"][0]["message"]["tool_calls"].is_null());

    let turns = json!([
        {"role": "user", "content": "Weather in Lahore for 2 days?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Lahore\", \"days\": 2}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "31 C, clear"}
    ]);
    let (status, body) = chat(&s, json!({"messages": turns, "max_tokens": 4})).await;
    assert_eq!(status, 200, "{body}");
    assert!(prompt_tokens(&body) > prompt_tokens(&with), "{body}");

    let bad_turns = json!([
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "get_weather", "arguments": "{not json"}}]}
    ]);
    let (status, body) = chat(&s, json!({"messages": bad_turns})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "messages", "{body}");
}

#[tokio::test]
async fn bad_tool_fields_are_400s_naming_the_field() {
    let s = start();
    let cases = [
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "reboot_tower"}}}),
            "tool_choice",
        ),
        (
            json!({"tools": [], "tool_choice": "required"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f",
                "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}}],
                "tool_choice": "required"}),
            "tools",
        ),
        (json!({"tools": [{"type": "code_interpreter"}]}), "tools"),
        (
            json!({"tool_choice": "required", "response_format": {"type": "json_object"}}),
            "response_format",
        ),
    ];
    for (extra, field) in cases {
        let (status, body) = chat(&s, extra.clone()).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["param"], field, "{extra}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    // The server is fine afterwards.
    let (status, body) = chat(&s, json!({"tool_choice": "required", "max_tokens": 300})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn auto_needs_a_known_format_but_forced_calls_do_not() {
    // The fixture's own template is Llama 2's: no tool markers, no parser flag.
    let s = TestServer::start(&["--max-model-len", "2048", "--num-kv-blocks", "512"]);
    let (status, body) = chat(&s, json!({})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "tool_choice", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--tool-call-parser"),
        "{body}"
    );
    let (status, body) = chat(&s, json!({"tool_choice": "required"})).await;
    assert_eq!(status, 200, "{body}");
    for (name, args) in calls(&body, 0) {
        check_arguments(&name, &args);
    }
    drop(s);
    let s = TestServer::start(&[
        "--max-model-len",
        "2048",
        "--num-kv-blocks",
        "512",
        "--tool-call-parser",
        "hermes",
    ]);
    let (status, body) = chat(&s, json!({"max_tokens": 16})).await;
    assert_eq!(status, 200, "{body}");
}

/// A trained model through a whole agent turn: SmolLM2 (whose own template knows no tools)
/// with the shipped Hermes template. Its forced calls must match the schema, and after the
/// tool's result it must answer in text.
#[tokio::test]
async fn smollm2_agent_loop_calls_a_tool_and_answers_from_its_result() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let args = server_args();
    let s = TestServer::start_model(
        &path,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let question =
        json!({"role": "user", "content": "What is the weather in Lahore for the next 3 days?"});
    let (status, body) = chat(
        &s,
        json!({"messages": [question], "tool_choice": "required", "n": 8}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for i in 0..8 {
        for (name, args) in calls(&body, i) {
            check_arguments(&name, &args);
        }
    }

    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    let (status, body) = chat(
        &s,
        json!({"messages": [question], "tool_choice": named, "temperature": 0.0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    let args = call["function"]["arguments"].as_str().unwrap();
    check_arguments("get_weather", args);
    let turns = json!([question,
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"city\": \"Lahore\", \"forecast_c\": [31, 33, 29], \"sky\": \"clear\"}"}]);
    let (status, body) = chat(
        &s,
        json!({"messages": turns, "temperature": 0.0, "max_tokens": 80}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = &body["choices"][0];
    println!("SmolLM2 after the tool result: {answer}");
    let text = answer["message"]["content"].as_str().unwrap_or("");
    assert!(!text.trim().is_empty(), "{body}");
    assert!(answer["message"]["tool_calls"].is_null(), "{body}");
}
