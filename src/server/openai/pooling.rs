//! What /v1/embeddings and /v1/rerank share: the input-length policy
//! (`truncate_prompt_tokens`), tokenizing off the async runtime, running the encoder, and
//! turning pooling errors into OpenAI-shaped ones.

use crate::embed::{EncodeError, Length, PoolingError, PoolingHandle};
use crate::server::error::ApiError;
use crate::server::record::RequestRecord;
use axum::response::{IntoResponse, Response};
use indus_models::encoder::EncoderInput;

/// vLLM's `truncate_prompt_tokens`: absent → over-long inputs are refused; `-1` → cut to
/// the model's limit; `k` in 1..=limit → cut to `k` tokens (special tokens included).
pub fn length_policy(truncate: Option<i64>, max: usize) -> Result<Length, ApiError> {
    match truncate {
        None => Ok(Length::AtMost(max)),
        Some(-1) => Ok(Length::TruncateTo(max)),
        Some(k) if k >= 1 && k as u64 <= max as u64 => Ok(Length::TruncateTo(k as usize)),
        Some(k) => Err(ApiError::bad(
            "truncate_prompt_tokens",
            format!("truncate_prompt_tokens must be -1 or in 1..={max}, got {k}"),
        )),
    }
}

/// The 400 for input `index` that failed to tokenize.
pub fn encode_error(param: &str, e: EncodeError) -> ApiError {
    let hint = match e {
        EncodeError::TooLong { .. } => {
            "; set truncate_prompt_tokens (-1 for the model's limit) to truncate"
        }
        _ => "",
    };
    ApiError::bad(param, format!("{param}: {e}{hint}"))
}

pub fn pooling_error(e: PoolingError) -> ApiError {
    match e {
        PoolingError::Overloaded(n) => ApiError::QueueFull(n),
        PoolingError::Stopped(what) => ApiError::Unavailable(format!("the {what} is not running")),
        PoolingError::Failed(m) => ApiError::Internal(m),
    }
}

/// Token ids given by the client, checked against the vocabulary and the length policy
/// (ids are used as given: the client added any special tokens).
pub fn check_ids(
    param: &str,
    ids: Vec<u32>,
    vocab: usize,
    length: Length,
) -> Result<EncoderInput, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::bad(param, format!("{param} must not be empty")));
    }
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad(
            param,
            format!("{param}: token id {bad} is out of the vocabulary (size {vocab})"),
        ));
    }
    let ids = match length {
        Length::AtMost(max) if ids.len() > max => {
            return Err(encode_error(
                param,
                EncodeError::TooLong {
                    tokens: ids.len(),
                    max,
                },
            ));
        }
        Length::TruncateTo(k) => ids.into_iter().take(k).collect(),
        _ => ids,
    };
    Ok(EncoderInput {
        ids,
        type_ids: Vec::new(),
    })
}

/// Runs the encoder, mapping its errors.
pub async fn run(
    handle: &PoolingHandle,
    inputs: Vec<EncoderInput>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    handle.run(inputs).await.map_err(pooling_error)
}

/// Ends a request: the JSON answer or the error, recorded once, with its request id.
pub fn respond<T: serde::Serialize>(rec: RequestRecord, result: Result<T, ApiError>) -> Response {
    let id = rec.id.clone();
    let resp = match result {
        Ok(body) => {
            rec.succeed();
            axum::Json(body).into_response()
        }
        Err(e) => {
            rec.fail(&e);
            e.into_response()
        }
    };
    crate::server::with_request_id(resp, &id)
}
