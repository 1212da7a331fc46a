//! POST /v1/chat/completions

use super::logprobs;
use super::params;
use super::structured;
use super::types::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatDelta, ChatLogprobs, ChatMessageIn, ChatMessageOut,
    ChatRequest, ChatResponse, MessageContent, Usage,
};
use crate::engine::{OutputStream, RequestOutput};
use crate::server::admission;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::record::RequestRecord;
use crate::server::sse::{self, ChunkFormat};
use crate::server::state::AppState;
use crate::server::{body, finish_str, generate, new_id, unix_now, with_request_id};
use crate::tokenizer::{ChatMessage, Tokenizer};
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
}

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
        .map(|(index, c)| ChatChoice {
            index,
            message: ChatMessageOut {
                role: "assistant",
                content: c.text.clone(),
            },
            logprobs: p.logprobs.then(|| ChatLogprobs {
                content: Some(logprobs::chat(&p.tokenizer, &c.logprobs)),
                refusal: None,
            }),
            finish_reason: c.finish_reason.map(finish_str),
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

/// Messages as the chat template takes them: text parts joined, `developer` as `system`.
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
            Ok(ChatMessage::new(role, &content))
        })
        .collect()
}

/// Countable bytes of a message's text (see [`admission::countable_bytes`]).
fn content_bytes(m: &ChatMessageIn) -> usize {
    match &m.content {
        None => 0,
        Some(MessageContent::Text(t)) => admission::countable_bytes(t),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|p| p.text.as_deref())
            .map(admission::countable_bytes)
            .sum(),
    }
}

/// The prompt token ids of a conversation rendered with the model's chat template.
pub fn render(
    tok: &Tokenizer,
    messages: &[ChatMessageIn],
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
        .apply_chat_template(&msgs, add_generation_prompt)
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
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad("tools", "tool calling is not supported"));
    }
    let top = params::non_negative(req.top_logprobs, "top_logprobs")?;
    let logprobs = match (req.logprobs.unwrap_or(false), top) {
        (true, top) => Some(top.unwrap_or(0)),
        (false, Some(k)) if k > 0 => {
            return Err(ApiError::bad(
                "top_logprobs",
                "top_logprobs requires logprobs to be true",
            ));
        }
        (false, _) => None,
    };
    st.caps
        .check(1, params::positive(req.common.n, "n")?.unwrap_or(1))?;
    let tokenizer = loaded.engine.tokenizer().clone();
    let max_len = loaded.engine.limits().max_model_len;
    admission::check_prompt_bytes(
        req.messages.iter().map(content_bytes).sum(),
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
        .run(move || render(&tok, &messages, add_generation_prompt))
        .await?;
    let max_tokens = match params::positive(req.max_completion_tokens, "max_completion_tokens")? {
        Some(m) => m,
        None => params::positive(req.common.max_tokens, "max_tokens")?.unwrap_or_else(|| {
            // OpenAI's default: whatever the context has left.
            loaded
                .engine
                .limits()
                .max_model_len
                .saturating_sub(ids.len())
                .max(1)
        }),
    };
    let sampling = params::sampling_params(&req.common, max_tokens, logprobs)?;
    let prompt_tokens = ids.len();
    rec.check_prompt_quota(prompt_tokens)?;
    let guided = structured::compile(st, loaded, &req.common).await?;
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
    })
}

struct StreamFormat {
    id: String,
    created: u64,
    model: String,
    n: usize,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
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
                        },
                        logprobs: None,
                        finish_reason: None,
                    }],
                    None,
                )
            })
            .collect()
    }

    fn chunk(&mut self, slot: usize, out: &RequestOutput) -> Option<String> {
        if out.text.is_empty() && out.finish_reason.is_none() && !self.logprobs {
            return None;
        }
        Some(self.json(
            vec![ChatChunkChoice {
                index: slot,
                delta: ChatDelta {
                    role: None,
                    content: (!out.text.is_empty()).then(|| out.text.clone()),
                },
                logprobs: self.logprobs.then(|| ChatLogprobs {
                    content: Some(logprobs::chat(&self.tokenizer, &out.logprobs)),
                    refusal: None,
                }),
                finish_reason: out.finish_reason.map(finish_str),
            }],
            None,
        ))
    }

    fn usage(&mut self, usage: Usage) -> String {
        self.json(Vec::new(), Some(usage))
    }
}
