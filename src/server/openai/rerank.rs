//! POST /v1/rerank (also /rerank and /v2/rerank), in the Jina/Cohere shape vLLM accepts:
//! `query`, `documents` (strings or `{text}` objects), `top_n`, `return_documents` →
//! `results: [{index, relevance_score, document?}]`, best first, plus `usage`.
//!
//! A cross-encoder with one label scores sigmoid(logit), as sentence-transformers'
//! CrossEncoder and TEI do; with several labels, the softmax probability of the last one.

use super::pooling::{self, encode_error, length_policy};
use crate::embed::PoolingTask;
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
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Object { text: String },
}

impl Document {
    fn text(&self) -> &str {
        match self {
            Self::Text(t) | Self::Object { text: t } => t,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RerankRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<Document>,
    #[serde(default)]
    pub top_n: Option<i64>,
    #[serde(default)]
    pub return_documents: Option<bool>,
    #[serde(default)]
    pub truncate_prompt_tokens: Option<i64>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RerankDocument {
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RerankResult {
    pub index: usize,
    pub relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<RerankDocument>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RerankUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RerankResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<RerankResult>,
    pub usage: RerankUsage,
}

/// Scores documents against a query with a cross-encoder (`--rerank-model`); also served
/// at `/v2/rerank` and `/rerank`.
#[utoipa::path(post, path = "/v1/rerank", operation_id = "rerank", tag = "vllm",
    request_body = RerankRequest,
    security((), ("bearer" = [])),
    responses((status = 200, body = RerankResponse), crate::server::openapi::RequestErrors))]
pub async fn create(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut rec = RequestRecord::new(&st, "/v1/rerank", new_id("rerank"), caller, &headers);
    let result = handle(&st, &mut rec, body).await;
    pooling::respond(rec, result)
}

async fn handle(
    st: &AppState,
    rec: &mut RequestRecord,
    body: Body,
) -> Result<RerankResponse, ApiError> {
    let req: RerankRequest = body::read_json(body, st.max_body_bytes).await?;
    rec.user = req.user.clone();
    let (served, model) =
        st.ready_pooling(req.model.as_deref(), rec.caller(), PoolingTask::Score)?;
    rec.model = Some(model.clone());
    let info = served.handle.info().clone();
    if req.query.is_empty() {
        return Err(ApiError::bad("query", "query must not be empty"));
    }
    if req.documents.is_empty() {
        return Err(ApiError::bad("documents", "documents must not be empty"));
    }
    if req.documents.len() > info.max_client_batch_size {
        return Err(ApiError::bad(
            "documents",
            format!(
                "{} documents, more than the limit of {} per request (--max-client-batch-size)",
                req.documents.len(),
                info.max_client_batch_size
            ),
        ));
    }
    let top_n = match req.top_n {
        None | Some(0) => req.documents.len(),
        Some(n) if n > 0 => (n as usize).min(req.documents.len()),
        Some(n) => {
            return Err(ApiError::bad(
                "top_n",
                format!("top_n must be positive, got {n}"),
            ));
        }
    };
    let length = length_policy(req.truncate_prompt_tokens, info.max_input_tokens)?;
    if rec.wants_content() {
        rec.prompt_content = Some(serde_json::json!({
            "query": req.query,
            "documents": req.documents,
        }));
    }
    let query = req.query.clone();
    let docs: Vec<String> = req.documents.iter().map(|d| d.text().to_string()).collect();
    let inputs = served
        .handle
        .tokenize(move |tok| {
            docs.iter()
                .enumerate()
                .map(|(i, d)| {
                    if d.is_empty() {
                        return Err(ApiError::bad(
                            &format!("documents[{i}]"),
                            format!("documents[{i}] must not be empty"),
                        ));
                    }
                    tok.encode_pair(&query, d, length)
                        .map_err(|e| encode_error(&format!("documents[{i}]"), e))
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await
        .map_err(pooling::pooling_error)??;
    let tokens: usize = inputs.iter().map(|i| i.ids.len()).sum();
    rec.add_prompt(tokens, 0);
    let logits = pooling::run(&served.handle, inputs).await?;
    let mut results: Vec<RerankResult> = logits
        .iter()
        .enumerate()
        .map(|(index, l)| RerankResult {
            index,
            relevance_score: relevance(l),
            document: None,
        })
        .collect();
    results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    results.truncate(top_n);
    if req.return_documents.unwrap_or(true) {
        for r in &mut results {
            r.document = Some(RerankDocument {
                text: req.documents[r.index].text().to_string(),
            });
        }
    }
    Ok(RerankResponse {
        id: rec.id.clone(),
        model,
        results,
        usage: RerankUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

/// The relevance of one pair from its logits.
fn relevance(logits: &[f32]) -> f32 {
    match logits {
        [] => 0.0,
        [one] => 1.0 / (1.0 + (-one).exp()),
        many => {
            let max = many.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = many.iter().map(|x| (x - max).exp()).sum();
            (many[many.len() - 1] - max).exp() / sum
        }
    }
}

#[cfg(test)]
mod tests {
    use super::relevance;

    #[test]
    fn one_label_is_a_sigmoid_and_several_a_softmax() {
        assert!((relevance(&[0.0]) - 0.5).abs() < 1e-7);
        assert!((relevance(&[2.0]) - 0.880_797).abs() < 1e-5);
        assert!((relevance(&[0.0, 0.0]) - 0.5).abs() < 1e-7);
        assert!(relevance(&[-5.0, 5.0]) > 0.99);
    }
}
