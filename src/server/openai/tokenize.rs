//! POST /tokenize and /detokenize (vLLM's extension endpoints).

use super::chat::render;
use super::logprobs::token_text;
use super::types::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use crate::server::auth::Caller;
use crate::server::body::read_json;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use crate::tokenizer::Tokenizer;
use axum::body::Body;
use axum::extract::State;
use axum::{Extension, Json};
use std::sync::Arc;

/// A prompt's tokens, or the chat template's rendering of `messages`.
#[utoipa::path(post, path = "/tokenize", tag = "vllm",
    request_body = TokenizeRequest,
    security((), ("bearer" = [])),
    responses((status = 200, body = TokenizeResponse), crate::server::openapi::RequestErrors))]
pub async fn tokenize(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Json<TokenizeResponse>, ApiError> {
    let req: TokenizeRequest = read_json(body, st.max_body_bytes).await?;
    let l = st.ready_engine()?;
    l.resolve_model(req.model.as_deref(), &caller)?;
    let tok = l.engine.tokenizer();
    let tokens = tokenize_ids(tok, &req)?;
    let token_strs = req
        .return_token_strs
        .unwrap_or(false)
        .then(|| tokens.iter().map(|&t| token_text(tok, t).0).collect());
    Ok(Json(TokenizeResponse {
        count: tokens.len(),
        max_model_len: l.engine.limits().max_model_len,
        tokens,
        token_strs,
    }))
}

/// Token ids back to text.
#[utoipa::path(post, path = "/detokenize", tag = "vllm",
    request_body = DetokenizeRequest,
    security((), ("bearer" = [])),
    responses((status = 200, body = DetokenizeResponse), crate::server::openapi::RequestErrors))]
pub async fn detokenize(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Body,
) -> Result<Json<DetokenizeResponse>, ApiError> {
    let req: DetokenizeRequest = read_json(body, st.max_body_bytes).await?;
    let l = st.ready_engine()?;
    l.resolve_model(req.model.as_deref(), &caller)?;
    let vocab = l.engine.limits().vocab_size;
    let prompt = detokenize_text(l.engine.tokenizer(), vocab, &req.tokens)?;
    Ok(Json(DetokenizeResponse { prompt }))
}

/// The ids `/tokenize` answers: the prompt encoded, or the messages through the chat template.
/// Free of server state so that the request fuzz target runs this very code.
pub fn tokenize_ids(tok: &Tokenizer, req: &TokenizeRequest) -> Result<Vec<u32>, ApiError> {
    match (&req.prompt, &req.messages) {
        (Some(p), None) => tok
            .encode(p, req.add_special_tokens.unwrap_or(true))
            .map_err(|e| ApiError::bad("prompt", e.to_string())),
        (None, Some(m)) => render(tok, m, None, req.add_generation_prompt.unwrap_or(true)),
        _ => Err(ApiError::bad(
            "prompt",
            "give exactly one of `prompt` and `messages`",
        )),
    }
}

/// The text `/detokenize` answers: every id checked against the vocabulary, then decoded.
pub fn detokenize_text(tok: &Tokenizer, vocab: usize, tokens: &[i64]) -> Result<String, ApiError> {
    let ids = tokens
        .iter()
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| {
                    ApiError::bad(
                        "tokens",
                        format!("token id {t} is outside the vocabulary (size {vocab})"),
                    )
                })
        })
        .collect::<Result<Vec<u32>, _>>()?;
    tok.decode(&ids, false)
        .map_err(|e| ApiError::bad("tokens", e.to_string()))
}
