//! The OpenAPI 3.1 document of the API port, generated from the wire types (utoipa) and
//! served at `/openapi.json`. It is open like the probes: it holds no secret, and clients and
//! gateways fetch it before they have a key. CI runs schemathesis against it on a live
//! server (`scripts/schemathesis-check.sh`).

use super::error::ErrorBody;
use super::openai::{chat, completions, embeddings, models, rerank, tokenize};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

/// The error answers of a route that reads a request body and may queue on a model.
#[derive(IntoResponses)]
#[allow(dead_code)] // never built: it only describes `ApiError`'s answers
pub enum RequestErrors {
    /// Malformed JSON, a field out of range or not supported; `param` names the field.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Keys are set and the request has none, or a wrong one.
    #[response(status = 401, headers(("www-authenticate" = String)))]
    Unauthorized(ErrorBody),
    /// The model is not served here, or the key may not use it.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body did not arrive within `--http-body-timeout`.
    #[response(status = 408)]
    Timeout(ErrorBody),
    /// The body is over `--max-request-body-bytes`.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The queue is full (in sequences) or the key is over a quota; `Retry-After` says when
    /// to come back.
    #[response(status = 429, headers(
        ("retry-after" = u64, description = "Seconds: the queue's expected drain time, jittered"),
        ("x-ratelimit-limit-requests" = u64),
        ("x-ratelimit-remaining-requests" = u64),
        ("x-ratelimit-reset-requests" = String),
        ("x-ratelimit-limit-tokens" = u64),
        ("x-ratelimit-remaining-tokens" = u64),
        ("x-ratelimit-reset-tokens" = String),
    ))]
    Overloaded(ErrorBody),
    /// The model is loading, the engine stopped, or the server is draining after SIGTERM.
    #[response(status = 503, headers(("retry-after" = u64)))]
    Unavailable(ErrorBody),
    /// A fault of the server's own (a bug: report it).
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// The error answers of the read-only routes (`/v1/models`, `/metrics`).
#[derive(IntoResponses)]
#[allow(dead_code)] // never built: it only describes `ApiError`'s answers
pub enum ReadErrors {
    #[response(status = 401, headers(("www-authenticate" = String)))]
    Unauthorized(ErrorBody),
    /// No such model (or the key may not use it).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The model is loading or the server is draining after SIGTERM.
    #[response(status = 503, headers(("retry-after" = u64)))]
    Unavailable(ErrorBody),
}

/// The probes and the document itself, which live in this module's router half.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "operations",
    responses((status = 200, description = "The process is up (the model may still be loading)")))]
#[allow(dead_code)]
fn health_doc() {}

#[utoipa::path(get, path = "/ready", operation_id = "ready", tag = "operations",
    responses(
        (status = 200, description = "The model is loaded and the engine loop alive", body = String),
        (status = 503, description = "Loading, stopped or draining", body = ErrorBody,
            headers(("retry-after" = u64))),
    ))]
#[allow(dead_code)]
fn ready_doc() {}

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format (on the API port unless --metrics-port moves it)",
            body = String, content_type = "text/plain"),
        ReadErrors,
    ))]
#[allow(dead_code)]
fn metrics_doc() {}

#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "operations",
    responses((status = 200, description = "This document", body = Object)))]
#[allow(dead_code)]
fn openapi_doc() {}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Indus",
        description = "OpenAI-compatible inference API (with vLLM's extensions) of an Indus server."
    ),
    paths(
        completions::create,
        chat::create,
        embeddings::create,
        rerank::create,
        models::list,
        models::get,
        tokenize::tokenize,
        tokenize::detokenize,
        health_doc,
        ready_doc,
        metrics_doc,
        openapi_doc,
    ),
    modifiers(&BearerKeys, &RerankAliases),
    tags(
        (name = "openai", description = "OpenAI's API"),
        (name = "vllm", description = "vLLM's extensions"),
        (name = "operations", description = "Probes, metrics and this document"),
    )
)]
struct ApiDoc;

/// API keys (`--api-key`, `--api-keys-file`) as an HTTP bearer scheme.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let comps = api.components.get_or_insert_with(Default::default);
        comps.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `/v2/rerank` (Cohere v2, TEI) and `/rerank` (Jina) are the same operation as `/v1/rerank`.
struct RerankAliases;

impl Modify for RerankAliases {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let Some(item) = api.paths.paths.get("/v1/rerank").cloned() else {
            return;
        };
        for (path, op_id) in [("/v2/rerank", "rerank_v2"), ("/rerank", "rerank_jina")] {
            let mut alias = item.clone();
            if let Some(op) = alias.post.as_mut() {
                op.operation_id = Some(op_id.to_string());
            }
            api.paths.paths.insert(path.to_string(), alias);
        }
    }
}

/// Under OpenAPI 3.1 the `schema` of a `text/event-stream` answer describes one event (its
/// `data`, `event`, `id`, `retry` fields), not the JSON inside `data` — which is what
/// schemathesis validates and what generated SSE clients read. So each stream's chunk
/// schema moves into `data`'s `contentSchema`, beside the two other payloads a stream
/// carries: the closing `[DONE]` and an error after the headers went out (`sse.rs`).
fn describe_sse_events(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for op in paths.values_mut().filter_map(|item| item.get_mut("post")) {
        let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
            continue;
        };
        for resp in responses.values_mut() {
            let Some(media) = resp.pointer_mut("/content/text~1event-stream") else {
                continue;
            };
            if let Some(chunk) = media.get_mut("schema").map(serde_json::Value::take) {
                media["schema"] = sse_event_schema(chunk);
            }
        }
    }
}

/// One server-sent event whose `data` is `[DONE]`, or JSON holding a `chunk` or an error.
fn sse_event_schema(chunk: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {
                "type": "string",
                "if": {"const": "[DONE]"},
                "else": {
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "oneOf": [chunk, {"$ref": "#/components/schemas/ErrorBody"}]
                    }
                }
            }
        }
    })
}

/// The document, built once.
pub fn document() -> &'static str {
    static DOC: LazyLock<String> = LazyLock::new(|| {
        serde_json::to_value(ApiDoc::openapi())
            .and_then(|mut doc| {
                describe_sse_events(&mut doc);
                serde_json::to_string_pretty(&doc)
            })
            .unwrap_or_else(|e| {
                serde_json::json!({"error": {"message": format!("cannot render the OpenAPI document: {e}")}})
                    .to_string()
            })
    });
    &DOC
}

pub async fn serve() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(document()).expect("the document is JSON")
    }

    /// Every `$ref` in `v`, as `#/components/...` strings.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn documents_every_route_of_the_api_port() {
        let d = doc();
        let paths: Vec<&str> = d["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "/v1/completions",
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/rerank",
            "/v2/rerank",
            "/rerank",
            "/v1/models",
            "/v1/models/{id}",
            "/tokenize",
            "/detokenize",
            "/health",
            "/ready",
            "/metrics",
            "/openapi.json",
        ];
        let mut got = paths.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn operation_ids_are_unique() {
        let d = doc();
        let mut ids: Vec<&str> = d["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().expect("an operationId"))
            .collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{ids:?}");
    }

    #[test]
    fn every_reference_resolves() {
        let d = doc();
        let mut all = Vec::new();
        refs(&d, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external ref {r}"));
            assert!(d.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn every_error_answer_has_the_openai_shape() {
        let d = doc();
        let detail = &d["components"]["schemas"]["ErrorDetail"];
        let required: Vec<&str> = detail["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            required.contains(&"message") && required.contains(&"type"),
            "{detail}"
        );
        for (path, item) in d["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, resp) in op["responses"].as_object().unwrap() {
                    if status.starts_with('2') {
                        continue;
                    }
                    let schema = &resp["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn streamed_answers_describe_the_event_and_its_json_data() {
        let d = doc();
        for (path, chunk) in [
            ("/v1/chat/completions", "ChatChunk"),
            ("/v1/completions", "CompletionResponse"),
        ] {
            let event = &d["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
                ["schema"];
            assert_eq!(event["required"], serde_json::json!(["data"]), "{path}");
            let data = &event["properties"]["data"];
            assert_eq!(data["if"]["const"], "[DONE]", "{path}");
            let payloads = &data["else"]["contentSchema"]["oneOf"];
            assert_eq!(
                payloads[0]["$ref"],
                format!("#/components/schemas/{chunk}"),
                "{path}"
            );
            assert_eq!(payloads[1]["$ref"], "#/components/schemas/ErrorBody");
        }
    }

    #[test]
    fn request_ranges_match_the_engines_checks() {
        let d = doc();
        let common = &d["components"]["schemas"]["CommonParams"]["properties"];
        assert_eq!(common["temperature"]["maximum"], 2.0);
        assert_eq!(common["n"]["minimum"], 1.0);
        assert_eq!(common["top_k"]["minimum"], -1.0);
        let chat = &d["components"]["schemas"]["ChatRequest"];
        assert!(
            chat.to_string().contains("#/components/schemas/ToolSpec"),
            "{chat}"
        );
    }
}
