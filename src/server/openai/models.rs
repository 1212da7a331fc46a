//! GET /v1/models and /v1/models/{id}: every served name this caller may use — the chat
//! model's and each encoder's — with the task each serves.

use super::types::{ModelCard, ModelList};
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use std::sync::Arc;

/// Every served name with its card, chat model first.
fn cards(st: &AppState) -> Result<Vec<ModelCard>, ApiError> {
    if st.is_draining() {
        return Err(ApiError::ShuttingDown);
    }
    let created = st
        .created()
        .ok_or_else(|| ApiError::Unavailable("the model is still loading".into()))?;
    let mut out = Vec::new();
    if let Some(l) = st.loaded() {
        for n in &l.names {
            out.push(ModelCard {
                id: n.clone(),
                object: "model",
                created: l.created,
                owned_by: "indus",
                root: l.root.clone(),
                quantization: l.quantization.clone(),
                architecture: l.architecture.clone(),
                max_model_len: l.engine.limits().max_model_len,
                task: if l.embedding.is_some() {
                    "embed"
                } else {
                    "generate"
                },
            });
        }
    }
    for p in st.pooling() {
        let info = p.handle.info();
        for n in &p.names {
            out.push(ModelCard {
                id: n.clone(),
                object: "model",
                created,
                owned_by: "indus",
                root: p.root.clone(),
                quantization: None,
                architecture: None,
                max_model_len: info.max_input_tokens,
                task: info.task.as_str(),
            });
        }
    }
    Ok(out)
}

/// Every model name this key may use, with its task and limits.
#[utoipa::path(get, path = "/v1/models", operation_id = "list_models", tag = "openai",
    security((), ("bearer" = [])),
    responses((status = 200, body = ModelList), crate::server::openapi::ReadErrors))]
pub async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ModelList>, ApiError> {
    Ok(Json(ModelList {
        object: "list",
        data: cards(&st)?
            .into_iter()
            .filter(|c| caller.may_use(&c.id))
            .collect(),
    }))
}

/// One model's card. The id may contain `/` (`org/name`).
#[utoipa::path(get, path = "/v1/models/{id}", operation_id = "retrieve_model", tag = "openai",
    params(("id" = String, Path, description = "A served model name")),
    security((), ("bearer" = [])),
    responses((status = 200, body = ModelCard), crate::server::openapi::ReadErrors))]
pub async fn get(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    cards(&st)?
        .into_iter()
        .find(|c| c.id == id && caller.may_use(&c.id))
        .map(Json)
        .ok_or(ApiError::ModelNotFound(id))
}
