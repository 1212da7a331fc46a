//! POST /v1/completions

use super::logprobs;
use super::params::{self, Prompt};
use super::structured;
use super::types::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Usage,
};
use crate::engine::{OutputStream, RequestOutput, SamplingParams};
use crate::server::admission;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::record::RequestRecord;
use crate::server::sse::{self, ChunkFormat};
use crate::server::state::AppState;
use crate::server::{body, finish_str, generate, new_id, unix_now};
use crate::tokenizer::Tokenizer;
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// OpenAI's default for /v1/completions.
const DEFAULT_MAX_TOKENS: usize = 16;

struct Prepared {
    streams: Vec<OutputStream>,
    prompts: Vec<Prompt>,
    n: usize,
    model: String,
    echo: bool,
    logprobs: bool,
    stream: bool,
    include_usage: bool,
    tokenizer: Arc<Tokenizer>,
}

/// Text completions; with `stream: true` the answer is server-sent events, each a
/// `CompletionResponse` chunk, ending with `data: [DONE]`.
#[utoipa::path(post, path = "/v1/completions", operation_id = "create_completion", tag = "openai",
    request_body = super::types::CompletionRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The completion (JSON), or its chunks (SSE) when streamed",
            content((super::types::CompletionResponse = "application/json"),
                    (super::types::CompletionResponse = "text/event-stream"))),
        crate::server::openapi::RequestErrors,
    ))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = RequestRecord::new(&st, "/v1/completions", new_id("cmpl"), caller, &headers);
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
            echo: p.echo.then(|| echo_texts(&p.prompts, p.n, &p.tokenizer)),
            logprobs: p.logprobs,
            offsets: vec![0; p.prompts.len() * p.n],
            tokenizer: p.tokenizer.clone(),
        };
        return sse::respond(p.streams, p.n, rec, fmt, p.include_usage);
    }
    let done = match generate::collect(p.streams, &mut rec).await {
        Ok(d) => d,
        Err(e) => return reject(rec, e),
    };
    let echo = p.echo.then(|| echo_texts(&p.prompts, p.n, &p.tokenizer));
    let mut choices = Vec::new();
    for r in &done {
        for c in &r.choices {
            let index = choices.len();
            let prefix = echo.as_ref().map_or("", |e| e[index].as_str());
            let logprobs = p.logprobs.then(|| {
                let mut lp = CompletionLogprobs::default();
                logprobs::completion(&p.tokenizer, &c.logprobs, prefix.len(), &mut lp);
                lp
            });
            choices.push(CompletionChoice {
                index,
                text: format!("{prefix}{}", c.text),
                logprobs,
                finish_reason: c.finish_reason.map(finish_str),
            });
        }
    }
    let resp = CompletionResponse {
        id: rec.id.clone(),
        object: "text_completion",
        created,
        model: p.model,
        choices,
        usage: Some(Usage::new(
            rec.prompt_tokens,
            rec.completion_tokens,
            rec.cached_tokens,
        )),
    };
    let id = rec.id.clone();
    rec.succeed();
    crate::server::with_request_id(axum::Json(resp).into_response(), &id)
}

fn reject(rec: RequestRecord, e: ApiError) -> Response {
    let id = rec.id.clone();
    rec.fail(&e);
    crate::server::with_request_id(e.into_response(), &id)
}

async fn prepare(st: &AppState, rec: &mut RequestRecord, body: Body) -> Result<Prepared, ApiError> {
    let mut req: CompletionRequest = body::read_json(body, st.max_body_bytes).await?;
    rec.user = req.common.user.clone();
    rec.stream = req.common.stream == Some(true);
    let loaded = st.ready_engine()?;
    let model = loaded.resolve_model(req.common.model.as_deref(), rec.caller())?;
    loaded.require_generate(&model)?;
    rec.model = Some(model.clone());
    let (sampling, echo) = request_params(&req)?;
    let n = sampling.n;
    st.caps.check(params::prompt_count(&req.prompt), n)?;
    // A full queue refuses before the prompts are tokenized.
    loaded.engine.check_room(
        &rec.caller().key_name,
        params::prompt_count(&req.prompt) * n,
    )?;
    if rec.wants_content() {
        rec.prompt_content = Some(req.prompt.clone());
    }
    let tokenizer = loaded.engine.tokenizer().clone();
    let max_len = loaded.engine.limits().max_model_len;
    let max_bytes = admission::max_prompt_bytes(max_len, tokenizer.max_token_bytes());
    let prompt = std::mem::take(&mut req.prompt);
    let tok = tokenizer.clone();
    let prompts = st
        .tokenize_pool
        .run(move || params::parse_prompts(&prompt, &tok, max_bytes, max_len))
        .await?;
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let prompt_tokens = ids.iter().map(Vec::len).sum();
    rec.check_prompt_quota(prompt_tokens)?;
    let guided = structured::compile(st, loaded, &req.common).await?;
    let streams = generate::submit(
        loaded,
        &rec.id,
        ids,
        &sampling,
        params::priority(&req.common, rec.caller())?,
        &rec.caller().key_name,
        guided,
    )?;
    rec.charge_prompt(prompt_tokens);
    Ok(Prepared {
        streams,
        prompts,
        n,
        model,
        echo,
        logprobs: sampling.logprobs.is_some(),
        stream: rec.stream,
        include_usage: params::include_usage(&req.common),
        tokenizer,
    })
}

/// What needs only the request, checked in order before any model or server state is
/// touched: the fields this endpoint refuses, then the sampling parameters (with `n`), and
/// whether the prompt is echoed. Also the request fuzz target's entry point.
pub fn request_params(req: &CompletionRequest) -> Result<(SamplingParams, bool), ApiError> {
    params::check_common(&req.common)?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix", "suffix is not supported"));
    }
    let n = params::positive(req.common.n, "n")?.unwrap_or(1);
    if let Some(b) = params::positive(req.best_of, "best_of")?
        && b != n
    {
        return Err(ApiError::bad(
            "best_of",
            "best_of other than n is not supported",
        ));
    }
    let echo = req.echo.unwrap_or(false);
    let logprobs = params::non_negative(req.logprobs, "logprobs")?;
    if echo && logprobs.is_some() {
        return Err(ApiError::bad(
            "echo",
            "echo together with logprobs is not supported",
        ));
    }
    let max_tokens =
        params::positive(req.common.max_tokens, "max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS);
    Ok((
        params::sampling_params(&req.common, max_tokens, logprobs)?,
        echo,
    ))
}

/// The echoed prompt of every choice: the text as sent, or the decoded token ids.
fn echo_texts(prompts: &[Prompt], n: usize, tok: &Tokenizer) -> Vec<String> {
    prompts
        .iter()
        .flat_map(|p| {
            let text = p
                .text
                .clone()
                .unwrap_or_else(|| tok.decode(&p.ids, true).unwrap_or_default());
            std::iter::repeat_n(text, n)
        })
        .collect()
}

struct StreamFormat {
    id: String,
    created: u64,
    model: String,
    echo: Option<Vec<String>>,
    logprobs: bool,
    /// Byte offset of each choice's next token (legacy logprobs' text_offset).
    offsets: Vec<usize>,
    tokenizer: Arc<Tokenizer>,
}

impl StreamFormat {
    fn json(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> String {
        serde_json::to_string(&CompletionResponse {
            id: self.id.clone(),
            object: "text_completion",
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
        let Some(echo) = self.echo.take() else {
            return Vec::new();
        };
        echo.into_iter()
            .enumerate()
            .map(|(index, text)| {
                self.offsets[index] = text.len();
                self.json(
                    vec![CompletionChoice {
                        index,
                        text,
                        logprobs: None,
                        finish_reason: None,
                    }],
                    None,
                )
            })
            .collect()
    }

    fn chunk(&mut self, slot: usize, out: &RequestOutput) -> Vec<String> {
        if out.text.is_empty() && out.finish_reason.is_none() && !self.logprobs {
            return Vec::new();
        }
        let logprobs = self.logprobs.then(|| {
            let mut lp = CompletionLogprobs::default();
            self.offsets[slot] =
                logprobs::completion(&self.tokenizer, &out.logprobs, self.offsets[slot], &mut lp);
            lp
        });
        vec![self.json(
            vec![CompletionChoice {
                index: slot,
                text: out.text.clone(),
                logprobs,
                finish_reason: out.finish_reason.map(finish_str),
            }],
            None,
        )]
    }

    fn usage(&mut self, usage: Usage) -> String {
        self.json(Vec::new(), Some(usage))
    }
}
