//! POST /v1/embeddings, as OpenAI: `input` a string, strings, token ids or token-id
//! arrays; `encoding_format` float or base64; `dimensions` (Matryoshka models only);
//! plus vLLM's `truncate_prompt_tokens`.

use super::pooling::{self, check_ids, encode_error, length_policy};
use crate::embed::{PoolingInfo, PoolingTask};
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::record::RequestRecord;
use crate::server::state::AppState;
use crate::server::{body, new_id};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use indus_models::encoder::EncoderInput;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    #[schema(value_type = super::shapes::EmbeddingInput)]
    pub input: serde_json::Value,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub truncate_prompt_tokens: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingData {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingResponse {
    pub id: String,
    pub object: &'static str,
    pub data: Vec<EmbeddingData>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// One input as sent: text to tokenize, or ids to check.
enum RawInput {
    Text(String),
    Ids(Vec<u32>),
}

/// Embeddings from an encoder model (`--embedding-model`) or the generating model's
/// pooled hidden states.
#[utoipa::path(post, path = "/v1/embeddings", operation_id = "create_embedding", tag = "openai",
    request_body = EmbeddingRequest,
    security((), ("bearer" = [])),
    responses((status = 200, body = EmbeddingResponse), crate::server::openapi::RequestErrors))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = RequestRecord::new(&st, "/v1/embeddings", new_id("embd"), caller, &headers);
    let result = handle(&st, &mut rec, body).await;
    pooling::respond(rec, result)
}

async fn handle(
    st: &AppState,
    rec: &mut RequestRecord,
    body: Body,
) -> Result<EmbeddingResponse, ApiError> {
    let req: EmbeddingRequest = body::read_json(body, st.max_body_bytes).await?;
    rec.user = req.user.clone();
    let target = match st.decoder_embedder(req.model.as_deref(), rec.caller()) {
        Some(found) => {
            let (loaded, name) = found?;
            Target::Decoder(loaded, name)
        }
        None => {
            let (served, name) =
                st.ready_pooling(req.model.as_deref(), rec.caller(), PoolingTask::Embed)?;
            Target::Encoder(served, name)
        }
    };
    let (info, model) = match &target {
        Target::Decoder(l, name) => {
            let info = l.embedding.clone().ok_or_else(|| {
                ApiError::Internal("the model is not served for embeddings".into())
            })?;
            (info, name.clone())
        }
        Target::Encoder(p, name) => (p.handle.info().clone(), name.clone()),
    };
    rec.model = Some(model.clone());
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad(
                "encoding_format",
                format!("encoding_format must be `float` or `base64`, got `{other}`"),
            ));
        }
    };
    let dimensions = check_dimensions(req.dimensions, &info)?;
    let length = length_policy(req.truncate_prompt_tokens, info.max_input_tokens)?;
    let raw = parse_input(&req.input, info.max_client_batch_size)?;
    if rec.wants_content() {
        rec.prompt_content = Some(req.input.clone());
    }
    let vocab = info.vocab_size;
    let (tokens, rows) = match &target {
        Target::Encoder(served, _) => {
            let inputs: Vec<EncoderInput> = served
                .handle
                .tokenize(move |tok| {
                    raw.into_iter()
                        .enumerate()
                        .map(|(i, r)| {
                            let param = format!("input[{i}]");
                            match r {
                                RawInput::Text(t) => {
                                    tok.encode(&t, length).map_err(|e| encode_error(&param, e))
                                }
                                RawInput::Ids(ids) => check_ids(&param, ids, vocab, length),
                            }
                        })
                        .collect::<Result<Vec<_>, ApiError>>()
                })
                .await
                .map_err(pooling::pooling_error)??;
            let tokens: usize = inputs.iter().map(|i| i.ids.len()).sum();
            rec.add_prompt(tokens, 0);
            (tokens, pooling::run(&served.handle, inputs).await?)
        }
        Target::Decoder(loaded, _) => {
            let tok = loaded.engine.tokenizer().clone();
            let inputs = tokio::task::spawn_blocking(move || {
                raw.into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let param = format!("input[{i}]");
                        let ids = match r {
                            RawInput::Text(t) if t.is_empty() => {
                                return Err(ApiError::bad(
                                    &param,
                                    format!("{param}: input is empty"),
                                ));
                            }
                            RawInput::Text(t) => tok
                                .encode(&t, true)
                                .map_err(|e| ApiError::bad(&param, e.to_string()))?,
                            RawInput::Ids(ids) => ids,
                        };
                        check_ids(&param, ids, vocab, length).map(|i| i.ids)
                    })
                    .collect::<Result<Vec<_>, ApiError>>()
            })
            .await
            .map_err(|_| ApiError::Internal("the tokenizer failed".into()))??;
            let tokens: usize = inputs.iter().map(Vec::len).sum();
            rec.add_prompt(tokens, 0);
            let mut rows = decoder_embed(loaded, &rec.id, inputs).await?;
            if info.normalized {
                for r in &mut rows {
                    let d = r.len();
                    *r = truncate_renormalize(std::mem::take(r), d);
                }
            }
            (tokens, rows)
        }
    };
    let data = rows
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let row = match dimensions {
                Some(d) => truncate_renormalize(row, d),
                None => row,
            };
            EmbeddingData {
                object: "embedding",
                index,
                embedding: if base64 {
                    EmbeddingVector::Base64(encode_base64(&row))
                } else {
                    EmbeddingVector::Float(row)
                },
            }
        })
        .collect();
    Ok(EmbeddingResponse {
        id: rec.id.clone(),
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

/// Where the embeddings come from: an encoder's worker, or the chat engine serving a
/// decoder embedding model.
enum Target<'a> {
    Encoder(&'a crate::server::state::PoolingServed, String),
    Decoder(&'a crate::server::state::Loaded, String),
}

/// One prefill-only engine request per input (validated all before any is submitted);
/// the last token's final hidden states, in input order.
async fn decoder_embed(
    loaded: &crate::server::state::Loaded,
    id: &str,
    inputs: Vec<Vec<u32>>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let params = crate::engine::SamplingParams {
        max_tokens: 1,
        ..crate::engine::SamplingParams::greedy()
    };
    let requests = inputs
        .into_iter()
        .enumerate()
        .map(|(i, ids)| {
            let mut r = crate::engine::Request::new(format!("{id}-{i}"), ids, params.clone());
            r.embed = true;
            loaded.engine.validate(&r).map_err(|e| {
                let mut e = ApiError::from(e);
                if let ApiError::BadRequest { param, .. } = &mut e {
                    *param = Some(format!("input[{i}]"));
                }
                e
            })?;
            Ok(r)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let streams = requests
        .into_iter()
        .map(|r| loaded.engine.submit(r).map_err(ApiError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let done = futures::future::try_join_all(
        streams
            .into_iter()
            .map(crate::engine::OutputStream::collect),
    )
    .await?;
    done.into_iter()
        .map(|d| {
            d.embedding
                .ok_or_else(|| ApiError::Internal("the engine returned no embedding".into()))
        })
        .collect()
}

/// `dimensions`: the model's own size is always fine; smaller sizes only for models that
/// declare Matryoshka training (`is_matryoshka` or `matryoshka_dimensions` in config.json).
fn check_dimensions(
    dimensions: Option<i64>,
    info: &PoolingInfo,
) -> Result<Option<usize>, ApiError> {
    let Some(d) = dimensions else {
        return Ok(None);
    };
    let native = info.dimensions;
    if d == native as i64 {
        return Ok(None);
    }
    if d < 1 || d > native as i64 {
        return Err(ApiError::bad(
            "dimensions",
            format!("dimensions must be in 1..={native}, got {d}"),
        ));
    }
    let d = d as usize;
    if info.any_dimensions || info.matryoshka_dimensions.contains(&d) {
        Ok(Some(d))
    } else if info.matryoshka_dimensions.is_empty() {
        Err(ApiError::bad(
            "dimensions",
            format!(
                "this model does not support `dimensions` other than its own ({native}): it is not a Matryoshka model"
            ),
        ))
    } else {
        Err(ApiError::bad(
            "dimensions",
            format!(
                "dimensions must be one of {:?} for this model",
                info.matryoshka_dimensions
            ),
        ))
    }
}

/// Keeps the first `d` components and scales the result back to unit length.
fn truncate_renormalize(mut row: Vec<f32>, d: usize) -> Vec<f32> {
    row.truncate(d);
    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        row.iter_mut().for_each(|x| *x /= norm);
    }
    row
}

/// OpenAI's base64 format: the little-endian f32 bytes.
fn encode_base64(row: &[f32]) -> String {
    let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn parse_input(v: &serde_json::Value, max_inputs: usize) -> Result<Vec<RawInput>, ApiError> {
    use serde_json::Value;
    let shape = || {
        ApiError::bad(
            "input",
            "input must be a string, an array of strings, an array of token ids, or an array of token-id arrays",
        )
    };
    let ids = |items: &[Value], param: &str| -> Result<Vec<u32>, ApiError> {
        items
            .iter()
            .map(|x| {
                x.as_u64()
                    .filter(|&t| t <= u32::MAX as u64)
                    .map(|t| t as u32)
                    .ok_or_else(|| {
                        ApiError::bad(
                            param,
                            format!("{param} must hold token ids (non-negative integers)"),
                        )
                    })
            })
            .collect()
    };
    let out = match v {
        Value::String(s) => vec![RawInput::Text(s.clone())],
        Value::Array(items) if items.is_empty() => {
            return Err(ApiError::bad("input", "input must not be an empty array"));
        }
        Value::Array(items) => match &items[0] {
            Value::Number(_) => vec![RawInput::Ids(ids(items, "input")?)],
            Value::String(_) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(|s| RawInput::Text(s.to_string()))
                        .ok_or_else(shape)
                })
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .enumerate()
                .map(|(n, i)| match i {
                    Value::Array(a) => Ok(RawInput::Ids(ids(a, &format!("input[{n}]"))?)),
                    _ => Err(shape()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(shape()),
        },
        _ => return Err(shape()),
    };
    if out.len() > max_inputs {
        return Err(ApiError::bad(
            "input",
            format!(
                "input has {} items, more than the limit of {max_inputs} per request (--max-client-batch-size)",
                out.len()
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(any: bool, dims: Vec<usize>) -> PoolingInfo {
        PoolingInfo {
            task: PoolingTask::Embed,
            dimensions: 8,
            max_input_tokens: 16,
            vocab_size: 100,
            any_dimensions: any,
            matryoshka_dimensions: dims,
            normalized: true,
            weight_bytes: 0,
            max_client_batch_size: 4,
        }
    }

    #[test]
    fn dimensions_need_a_matryoshka_model() {
        assert_eq!(check_dimensions(None, &info(false, vec![])).unwrap(), None);
        assert_eq!(
            check_dimensions(Some(8), &info(false, vec![])).unwrap(),
            None
        );
        assert!(check_dimensions(Some(4), &info(false, vec![])).is_err());
        assert_eq!(
            check_dimensions(Some(4), &info(true, vec![])).unwrap(),
            Some(4)
        );
        assert_eq!(
            check_dimensions(Some(4), &info(false, vec![4])).unwrap(),
            Some(4)
        );
        assert!(check_dimensions(Some(3), &info(false, vec![4])).is_err());
        assert!(check_dimensions(Some(9), &info(true, vec![])).is_err());
        assert!(check_dimensions(Some(0), &info(true, vec![])).is_err());
    }

    #[test]
    fn truncation_renormalizes() {
        let r = truncate_renormalize(vec![3.0, 4.0, 12.0], 2);
        assert_eq!(r, vec![0.6, 0.8]);
    }

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(encode_base64(&[1.0]), "AACAPw==");
    }

    #[test]
    fn input_shapes_and_limits() {
        use serde_json::json;
        assert_eq!(parse_input(&json!("a"), 4).unwrap().len(), 1);
        assert_eq!(parse_input(&json!(["a", "b"]), 4).unwrap().len(), 2);
        assert_eq!(parse_input(&json!([1, 2, 3]), 4).unwrap().len(), 1);
        assert_eq!(parse_input(&json!([[1], [2, 3]]), 4).unwrap().len(), 2);
        assert!(parse_input(&json!([]), 4).is_err());
        assert!(parse_input(&json!(["a", 1]), 4).is_err());
        assert!(parse_input(&json!([-1]), 4).is_err());
        assert!(parse_input(&json!({"a": 1}), 4).is_err());
        let e = parse_input(&json!(["a", "b", "c", "d", "e"]), 4)
            .err()
            .unwrap();
        assert!(e.to_string().contains("limit of 4"), "{e}");
    }
}
