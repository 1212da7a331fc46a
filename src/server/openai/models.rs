//! GET /v1/models and /v1/models/{id}: the served names this caller may use.

use super::types::{ModelCard, ModelList};
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::state::{AppState, Loaded};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use std::sync::Arc;

fn card(l: &Loaded, name: &str) -> ModelCard {
    ModelCard {
        id: name.to_string(),
        object: "model",
        created: l.created,
        owned_by: "indus",
        root: l.root.clone(),
        quantization: l.quantization.clone(),
        max_model_len: l.engine.limits().max_model_len,
    }
}

pub async fn list(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ModelList>, ApiError> {
    let l = st.ready_engine()?;
    Ok(Json(ModelList {
        object: "list",
        data: l
            .names
            .iter()
            .filter(|n| caller.may_use(n))
            .map(|n| card(l, n))
            .collect(),
    }))
}

pub async fn get(
    State(st): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let l = st.ready_engine()?;
    let name = l.resolve_model(Some(&id), &caller)?;
    Ok(Json(card(l, &name)))
}
