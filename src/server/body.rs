//! Reading a JSON request body under the size limit (413 beyond it, 400 if not JSON, 408
//! when it does not arrive within `--http-body-timeout`).

use super::error::ApiError;
use axum::body::Body;
use futures::StreamExt;
use serde::de::DeserializeOwned;

pub async fn read_json<T: DeserializeOwned>(body: Body, limit: usize) -> Result<T, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let e = e.into_inner();
            match e.downcast_ref::<super::conn::BodyTimeout>() {
                Some(t) => ApiError::RequestTimeout(t.to_string()),
                None => ApiError::BadRequest {
                    message: format!("cannot read the request body: {e}"),
                    param: None,
                },
            }
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&buf).map_err(|e| ApiError::BadRequest {
        message: format!("invalid JSON body: {e}"),
        param: None,
    })
}
