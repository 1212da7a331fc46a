//! Wire parameters → engine parameters. Ranges the engine knows (temperature, top_p, …) are
//! checked by `EngineHandle::validate`; what only the wire format can get wrong (negative
//! counts, unsupported fields) is checked here.

use super::types::{CommonParams, StopInput};
use crate::engine::SamplingParams;
use crate::server::admission;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::tokenizer::Tokenizer;

/// One prompt: its token ids, and its text when it was given as text (for `echo`).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub text: Option<String>,
    pub ids: Vec<u32>,
}

/// A positive count, or 400 naming `param`.
pub fn positive(v: Option<i64>, param: &str) -> Result<Option<usize>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x >= 1 => Ok(Some(x as usize)),
        Some(x) => Err(ApiError::bad(
            param,
            format!("{param} must be at least 1, got {x}"),
        )),
    }
}

/// A count that may be zero, or 400 naming `param`.
pub fn non_negative(v: Option<i64>, param: &str) -> Result<Option<usize>, ApiError> {
    match v {
        None => Ok(None),
        Some(x) if x >= 0 => Ok(Some(x as usize)),
        Some(x) => Err(ApiError::bad(
            param,
            format!("{param} must not be negative, got {x}"),
        )),
    }
}

/// The request's `priority` (0 when absent). Only keys allowed it may set another value:
/// a lower priority passes every other key's queue.
pub fn priority(c: &CommonParams, caller: &Caller) -> Result<i32, ApiError> {
    match c.priority {
        None | Some(0) => Ok(0),
        Some(_) if !caller.allow_priority => Err(ApiError::bad(
            "priority",
            format!(
                "the key `{}` may not set priority (allow_priority in the keys file)",
                caller.key_name
            ),
        )),
        Some(p) => Ok(p),
    }
}

/// Checks the fields shared by both endpoints that the engine cannot check.
pub fn check_common(c: &CommonParams) -> Result<(), ApiError> {
    if c.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(ApiError::bad("logit_bias", "logit_bias is not supported"));
    }
    if c.stream_options.is_some() && c.stream != Some(true) {
        return Err(ApiError::bad(
            "stream_options",
            "stream_options can only be set when stream is true",
        ));
    }
    Ok(())
}

pub fn include_usage(c: &CommonParams) -> bool {
    c.stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false)
}

/// The engine's sampling parameters for a request.
pub fn sampling_params(
    c: &CommonParams,
    max_tokens: usize,
    logprobs: Option<usize>,
) -> Result<SamplingParams, ApiError> {
    let n = positive(c.n, "n")?.unwrap_or(1);
    let top_k = match c.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(ApiError::bad(
                "top_k",
                format!("top_k must be -1 (disabled) or positive, got {k}"),
            ));
        }
    };
    let d = SamplingParams::default();
    Ok(SamplingParams {
        n,
        max_tokens,
        temperature: c.temperature.unwrap_or(d.temperature),
        top_k,
        top_p: c.top_p.unwrap_or(d.top_p),
        min_p: c.min_p.unwrap_or(d.min_p),
        repetition_penalty: c.repetition_penalty.unwrap_or(d.repetition_penalty),
        presence_penalty: c.presence_penalty.unwrap_or(d.presence_penalty),
        frequency_penalty: c.frequency_penalty.unwrap_or(d.frequency_penalty),
        seed: c.seed.map(|s| s as u64),
        stop: c.stop.clone().map(StopInput::into_vec).unwrap_or_default(),
        stop_token_ids: c.stop_token_ids.clone().unwrap_or_default(),
        ignore_eos: c.ignore_eos.unwrap_or(false),
        logprobs,
        skip_special_tokens: c.skip_special_tokens.unwrap_or(true),
    })
}

/// How many prompts a completions `prompt` holds, without parsing them: an array of strings
/// or of token-id arrays is that many; anything else one.
pub fn prompt_count(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(items)
            if matches!(
                items.first(),
                Some(serde_json::Value::String(_) | serde_json::Value::Array(_))
            ) =>
        {
            items.len()
        }
        _ => 1,
    }
}

fn token_id(v: &serde_json::Value) -> Option<u32> {
    v.as_u64().and_then(|x| u32::try_from(x).ok())
}

fn token_ids(items: &[serde_json::Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| {
            token_id(v).ok_or_else(|| {
                ApiError::bad(
                    "prompt",
                    format!("token ids must be non-negative integers, got {v}"),
                )
            })
        })
        .collect()
}

/// The completions `prompt`: a string, an array of strings, an array of token ids, or an
/// array of token-id arrays. Text is tokenized with the model's special tokens (BOS).
///
/// A text prompt over `max_bytes` countable bytes cannot fit `max_model_len` tokens and is
/// refused before it is tokenized (see [`admission::max_prompt_bytes`]).
pub fn parse_prompts(
    v: &serde_json::Value,
    tok: &Tokenizer,
    max_bytes: usize,
    max_model_len: usize,
) -> Result<Vec<Prompt>, ApiError> {
    use serde_json::Value;
    let encode = |s: &str| -> Result<Prompt, ApiError> {
        admission::check_prompt_bytes(
            admission::countable_bytes(s),
            max_bytes,
            max_model_len,
            "prompt",
        )?;
        let ids = tok
            .encode(s, true)
            .map_err(|e| ApiError::bad("prompt", e.to_string()))?;
        Ok(Prompt {
            text: Some(s.to_string()),
            ids,
        })
    };
    let shape_error = || {
        ApiError::bad(
            "prompt",
            "prompt must be a string, an array of strings, an array of token ids, or an array of token-id arrays",
        )
    };
    match v {
        Value::String(s) => Ok(vec![encode(s)?]),
        Value::Array(items) if items.is_empty() => {
            Err(ApiError::bad("prompt", "prompt must not be empty"))
        }
        Value::Array(items) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|i| i.as_str().ok_or_else(shape_error).and_then(encode))
                .collect(),
            Value::Number(_) => Ok(vec![Prompt {
                text: None,
                ids: token_ids(items)?,
            }]),
            Value::Array(_) => items
                .iter()
                .map(|i| match i {
                    Value::Array(ids) => Ok(Prompt {
                        text: None,
                        ids: token_ids(ids)?,
                    }),
                    _ => Err(shape_error()),
                })
                .collect(),
            _ => Err(shape_error()),
        },
        _ => Err(shape_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reject_negatives() {
        assert_eq!(positive(Some(3), "n").unwrap(), Some(3));
        assert!(positive(Some(0), "max_tokens").is_err());
        let e = positive(Some(-5), "max_tokens").unwrap_err();
        assert_eq!(e.body().error.param.as_deref(), Some("max_tokens"));
        assert!(non_negative(Some(-1), "logprobs").is_err());
        assert_eq!(non_negative(Some(0), "logprobs").unwrap(), Some(0));
    }

    #[test]
    fn maps_common_params() {
        let c: CommonParams = serde_json::from_value(serde_json::json!({
            "n": 2, "temperature": 0.5, "top_k": -1, "stop": "x", "seed": 7, "ignore_eos": true,
            "some_unknown_field": {"a": 1}
        }))
        .unwrap();
        let p = sampling_params(&c, 10, Some(2)).unwrap();
        assert_eq!((p.n, p.max_tokens, p.top_k, p.seed), (2, 10, 0, Some(7)));
        assert_eq!(p.stop, vec!["x".to_string()]);
        assert!(p.ignore_eos);
        assert_eq!(p.logprobs, Some(2));
    }
}
