//! POST /v1/chat/completions

use super::logprobs;
use super::params;
use super::structured;
use super::tools::{self, ToolPlan};
use super::types::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatDelta, ChatLogprobs, ChatMessageIn, ChatRequest,
    ChatResponse, MessageContent, Usage,
};
use crate::engine::{OutputStream, RequestOutput};
use crate::server::admission;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::record::RequestRecord;
use crate::server::sse::{self, ChunkFormat};
use crate::server::state::AppState;
use crate::server::{body, generate, new_id, unix_now, with_request_id};
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::tools::{ToolMode, ToolStreamer};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

struct Prepared {
    streams: Vec<OutputStream>,
    n: usize,
    model: String,
    logprobs: bool,
    stream: bool,
    include_usage: bool,
    tokenizer: Arc<Tokenizer>,
    /// How the output is read for tool calls; `None` when it is plain text.
    tool_mode: Option<ToolMode>,
}

/// Chat completions, tools and structured output included; with `stream: true` the answer
/// is server-sent events, each a `ChatChunk`, ending with `data: [DONE]`.
#[utoipa::path(post, path = "/v1/chat/completions", operation_id = "create_chat_completion", tag = "openai",
    request_body = super::types::ChatRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The completion (JSON), or its chunks (SSE) when streamed",
            content((super::types::ChatResponse = "application/json"),
                    (super::types::ChatChunk = "text/event-stream"))),
        crate::server::openapi::RequestErrors,
    ))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = RequestRecord::new(
        &st,
        "/v1/chat/completions",
        new_id("chatcmpl"),
        caller,
        &headers,
    );
    let p = match prepare(&st, &mut rec, body).await {
        Ok(p) => p,
        Err(e) => return reject(rec, e),
    };
    let created = unix_now();
    if p.stream {
        let fmt = StreamFormat {
            id: rec.id.clone(),
            created,
            model: p.model.clone(),
            n: p.n,
            logprobs: p.logprobs,
            tokenizer: p.tokenizer.clone(),
            streamers: (0..p.n)
                .map(|_| p.tool_mode.clone().map(ToolStreamer::new))
                .collect(),
        };
        return sse::respond(p.streams, p.n, rec, fmt, p.include_usage);
    }
    let done = match generate::collect(p.streams, &mut rec).await {
        Ok(d) => d,
        Err(e) => return reject(rec, e),
    };
    let choices = done
        .iter()
        .flat_map(|r| r.choices.iter())
        .enumerate()
        .map(|(index, c)| {
            let (message, has_calls) = tools::message(&c.text, p.tool_mode.as_ref());
            ChatChoice {
                index,
                message,
                logprobs: p.logprobs.then(|| ChatLogprobs {
                    content: Some(logprobs::chat(&p.tokenizer, &c.logprobs)),
                    refusal: None,
                }),
                finish_reason: c.finish_reason.map(|f| tools::finish_reason(f, has_calls)),
            }
        })
        .collect();
    let resp = ChatResponse {
        id: rec.id.clone(),
        object: "chat.completion",
        created,
        model: p.model,
        choices,
        usage: Usage::new(rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens),
    };
    let id = rec.id.clone();
    rec.succeed();
    with_request_id(axum::Json(resp).into_response(), &id)
}

fn reject(rec: RequestRecord, e: ApiError) -> Response {
    let id = rec.id.clone();
    rec.fail(&e);
    with_request_id(e.into_response(), &id)
}

/// Messages as the chat template takes them: text parts joined, `developer` as `system`,
/// tool calls' arguments as objects.
pub fn to_template_messages(messages: &[ChatMessageIn]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad("messages", "messages must not be empty"));
    }
    messages
        .iter()
        .map(|m| {
            let content = match &m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t.clone(),
                Some(MessageContent::Parts(parts)) => {
                    let mut texts = Vec::with_capacity(parts.len());
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => texts.push(t.as_str()),
                            (kind, _) => {
                                return Err(ApiError::bad(
                                    "messages",
                                    format!("content parts of type `{kind}` are not supported; only text"),
                                ));
                            }
                        }
                    }
                    texts.join("\n")
                }
            };
            let role = if m.role == "developer" { "system" } else { m.role.as_str() };
            let mut msg = ChatMessage::new(role, &content);
            if let Some(calls) = m.tool_calls.as_deref().filter(|c| !c.is_empty()) {
                msg.tool_calls = Some(tools::template_tool_calls(calls)?);
            }
            msg.tool_call_id = m.tool_call_id.clone();
            msg.name = m.name.clone();
            Ok(msg)
        })
        .collect()
}

/// Countable bytes of JSON values (tools, calls) as the template will write them.
fn json_bytes(values: &[serde_json::Value]) -> usize {
    serde_json::to_string(values).map_or(0, |t| admission::countable_bytes(&t))
}

/// Countable bytes of a message's text and calls (see [`admission::countable_bytes`]).
fn content_bytes(m: &ChatMessageIn) -> usize {
    m.tool_calls.as_deref().map_or(0, json_bytes)
        + match &m.content {
            None => 0,
            Some(MessageContent::Text(t)) => admission::countable_bytes(t),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .map(admission::countable_bytes)
                .sum(),
        }
}

/// The prompt token ids of a conversation (and the tools offered in it) rendered with the
/// model's chat template.
pub fn render(
    tok: &Tokenizer,
    messages: &[ChatMessageIn],
    tools: Option<&[serde_json::Value]>,
    add_generation_prompt: bool,
) -> Result<Vec<u32>, ApiError> {
    let msgs = to_template_messages(messages)?;
    if !tok.has_chat_template() {
        return Err(ApiError::bad(
            "messages",
            "this model has no chat template; start the server with --chat-template",
        ));
    }
    let text = tok
        .apply_chat_template_with_tools(&msgs, tools, add_generation_prompt)
        .map_err(|e| ApiError::bad("messages", e.to_string()))?;
    // The template writes special tokens (BOS) as text; don't add them twice.
    tok.encode(&text, false)
        .map_err(|e| ApiError::bad("messages", e.to_string()))
}

async fn prepare(st: &AppState, rec: &mut RequestRecord, body: Body) -> Result<Prepared, ApiError> {
    let mut req: ChatRequest = body::read_json(body, st.max_body_bytes).await?;
    rec.user = req.common.user.clone();
    rec.stream = req.common.stream == Some(true);
    let loaded = st.ready_engine()?;
    let model = loaded.resolve_model(req.common.model.as_deref(), rec.caller())?;
    loaded.require_generate(&model)?;
    rec.model = Some(model.clone());
    params::check_common(&req.common)?;
    let own_constraint = structured::constraint(&req.common)?;
    let ToolPlan {
        tools: offered,
        mode: tool_mode,
        constraint: tool_constraint,
    } = tools::plan(
        &req,
        loaded.tool_format,
        own_constraint.as_ref().map(|c| c.0),
    )?;
    if let Some(ToolMode::Auto { format, .. }) = &tool_mode
        && format.marker_is_special()
    {
        // The call marker is a special token: keep it in the text so calls can be found.
        req.common.skip_special_tokens.get_or_insert(false);
    }
    let logprobs = requested_logprobs(&req)?;
    let n = params::positive(req.common.n, "n")?.unwrap_or(1);
    st.caps.check(1, n)?;
    // A full queue refuses before the conversation is rendered and tokenized.
    loaded.engine.check_room(&rec.caller().key_name, n)?;
    let tokenizer = loaded.engine.tokenizer().clone();
    let max_len = loaded.engine.limits().max_model_len;
    let tools_bytes = offered.as_deref().map_or(0, json_bytes);
    admission::check_prompt_bytes(
        req.messages.iter().map(content_bytes).sum::<usize>() + tools_bytes,
        admission::max_prompt_bytes(max_len, tokenizer.max_token_bytes()),
        max_len,
        "messages",
    )?;
    if rec.wants_content() {
        rec.prompt_content = serde_json::to_value(&req.messages).ok();
    }
    let messages = std::mem::take(&mut req.messages);
    let add_generation_prompt = req.add_generation_prompt.unwrap_or(true);
    let tok = tokenizer.clone();
    let ids = st
        .tokenize_pool
        .run(move || render(&tok, &messages, offered.as_deref(), add_generation_prompt))
        .await?;
    let max_tokens = requested_max_tokens(&req, ids.len(), loaded.engine.limits().max_model_len)?;
    let sampling = params::sampling_params(&req.common, max_tokens, logprobs)?;
    let prompt_tokens = ids.len();
    rec.check_prompt_quota(prompt_tokens)?;
    let constraint = match tool_constraint {
        Some(k) => Some(("tools", k)),
        None => own_constraint,
    };
    let guided = match constraint {
        Some((param, k)) => Some(structured::compile_constraint(st, loaded, param, k).await?),
        None => None,
    };
    let streams = generate::submit(
        loaded,
        &rec.id,
        vec![ids],
        &sampling,
        params::priority(&req.common, rec.caller())?,
        &rec.caller().key_name,
        guided,
    )?;
    rec.charge_prompt(prompt_tokens);
    Ok(Prepared {
        streams,
        n: sampling.n,
        model,
        logprobs: logprobs.is_some(),
        stream: rec.stream,
        include_usage: params::include_usage(&req.common),
        tokenizer,
        tool_mode,
    })
}

/// Top-logprobs per token (`logprobs: true` with `top_logprobs: k`), or none.
pub fn requested_logprobs(req: &ChatRequest) -> Result<Option<usize>, ApiError> {
    let top = params::non_negative(req.top_logprobs, "top_logprobs")?;
    match (req.logprobs.unwrap_or(false), top) {
        (true, top) => Ok(Some(top.unwrap_or(0))),
        (false, Some(k)) if k > 0 => Err(ApiError::bad(
            "top_logprobs",
            "top_logprobs requires logprobs to be true",
        )),
        (false, _) => Ok(None),
    }
}

/// `max_completion_tokens`, else `max_tokens`, else OpenAI's default: whatever the context
/// has left after the prompt.
pub fn requested_max_tokens(
    req: &ChatRequest,
    prompt_len: usize,
    max_model_len: usize,
) -> Result<usize, ApiError> {
    match params::positive(req.max_completion_tokens, "max_completion_tokens")? {
        Some(m) => Ok(m),
        None => Ok(params::positive(req.common.max_tokens, "max_tokens")?
            .unwrap_or_else(|| max_model_len.saturating_sub(prompt_len).max(1))),
    }
}

struct StreamFormat {
    id: String,
    created: u64,
    model: String,
    n: usize,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
    /// Per choice: its tool-call reader, when the output is read for calls.
    streamers: Vec<Option<ToolStreamer>>,
}

impl StreamFormat {
    fn json(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> String {
        serde_json::to_string(&ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
        .unwrap_or_default()
    }
}

impl ChunkFormat for StreamFormat {
    fn opening(&mut self) -> Vec<String> {
        (0..self.n)
            .map(|index| {
                self.json(
                    vec![ChatChunkChoice {
                        index,
                        delta: ChatDelta {
                            role: Some("assistant"),
                            content: Some(String::new()),
                            tool_calls: None,
                        },
                        logprobs: None,
                        finish_reason: None,
                    }],
                    None,
                )
            })
            .collect()
    }

    fn chunk(&mut self, slot: usize, out: &RequestOutput) -> Vec<String> {
        let (deltas, has_calls) = match self.streamers.get_mut(slot).and_then(Option::as_mut) {
            Some(reader) => {
                let mut pieces = reader.push(&out.text);
                if out.finish_reason.is_some() {
                    pieces.extend(reader.finish());
                }
                (tools::deltas(pieces), reader.has_calls())
            }
            None => (
                if out.text.is_empty() {
                    Vec::new()
                } else {
                    vec![ChatDelta {
                        content: Some(out.text.clone()),
                        ..ChatDelta::default()
                    }]
                },
                false,
            ),
        };
        let finish = out
            .finish_reason
            .map(|f| tools::finish_reason(f, has_calls));
        if deltas.is_empty() && finish.is_none() && !self.logprobs {
            return Vec::new();
        }
        let mut logprobs = self.logprobs.then(|| ChatLogprobs {
            content: Some(logprobs::chat(&self.tokenizer, &out.logprobs)),
            refusal: None,
        });
        let count = deltas.len().max(1);
        let mut deltas = deltas.into_iter();
        (0..count)
            .map(|i| {
                self.json(
                    vec![ChatChunkChoice {
                        index: slot,
                        delta: deltas.next().unwrap_or_default(),
                        logprobs: logprobs.take(),
                        finish_reason: if i + 1 == count { finish } else { None },
                    }],
                    None,
                )
            })
            .collect()
    }

    fn usage(&mut self, usage: Usage) -> String {
        self.json(Vec::new(), Some(usage))
    }
}
