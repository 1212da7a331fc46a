//! Errors as clients see them: OpenAI's `{"error": {"message", "type", "param", "code"}}`
//! with the matching HTTP status.

use crate::engine::EngineError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or asks for something out of range.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// 401: missing or wrong API key.
    #[error("invalid or missing API key")]
    Unauthorized,
    /// 404: the model is not served here, or the caller's key may not use it.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// 404: no such route.
    #[error("no route for {0}")]
    NotFound(String),
    /// 405
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request body did not arrive within --http-body-timeout.
    #[error("{0}")]
    RequestTimeout(String),
    /// 413: the body is over --max-request-body-bytes.
    #[error("the request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 429: a queue is full (an encoder's --max-concurrent-embedding-requests).
    #[error("the server is overloaded ({0} requests waiting); retry later")]
    QueueFull(usize),
    /// 429: the engine's waiting queue is full (--max-waiting-requests, in sequences);
    /// `retry_after_secs` is the queue's expected drain time, jittered.
    #[error(
        "the server is overloaded ({waiting} sequences waiting); retry in about {retry_after_secs} s"
    )]
    Overloaded {
        waiting: usize,
        retry_after_secs: u64,
    },
    /// 429: the caller's key is over one of its quotas (keys file); `Retry-After` says
    /// when it may pass again.
    #[error("{0}")]
    Quota(crate::server::quota::Refusal),
    /// 503: the model is still loading or the engine stopped.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: the server is draining after SIGTERM; another replica (or
    /// this one's successor) will answer.
    #[error("the server is shutting down; retry the request")]
    ShuttingDown,
    /// 503 (an error event on a stream): the request was still running when
    /// --shutdown-timeout passed.
    #[error("the server shut down before the request finished (--shutdown-timeout)")]
    CutAtShutdown,
    /// 500
    #[error("{0}")]
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `service_unavailable_error`,
    /// `server_error`, or for a key over its quota `rate_limit_exceeded` or
    /// `insufficient_quota`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A machine-readable reason: `invalid_api_key`, `model_not_found`,
    /// `rate_limit_exceeded`, `request_too_large`, ...
    pub code: Option<&'static str>,
}

/// Seconds a client is told to wait after a 429 with no drain estimate: 1 or 2 at random, so
/// refused clients do not all come back together.
fn short_retry_after() -> u64 {
    1 + u64::from(rand::random::<bool>())
}

impl ApiError {
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::QueueFull(_) | Self::Overloaded { .. } | Self::Quota(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Unavailable(_) | Self::ShuttingDown | Self::CutAtShutdown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (kind, code, param) = match self {
            Self::BadRequest { param, .. } => ("invalid_request_error", None, param.clone()),
            Self::Unauthorized => ("invalid_request_error", Some("invalid_api_key"), None),
            Self::ModelNotFound(_) => (
                "invalid_request_error",
                Some("model_not_found"),
                Some("model".to_string()),
            ),
            Self::NotFound(_) => ("invalid_request_error", Some("not_found"), None),
            Self::MethodNotAllowed => ("invalid_request_error", Some("method_not_allowed"), None),
            Self::RequestTimeout(_) => ("invalid_request_error", Some("request_timeout"), None),
            Self::PayloadTooLarge(_) => ("invalid_request_error", Some("request_too_large"), None),
            Self::QueueFull(_) | Self::Overloaded { .. } => {
                ("rate_limit_error", Some("rate_limit_exceeded"), None)
            }
            Self::Quota(r) => (r.kind(), Some(r.kind()), None),
            Self::Unavailable(_) | Self::ShuttingDown | Self::CutAtShutdown => (
                "service_unavailable_error",
                Some("service_unavailable"),
                None,
            ),
            Self::Internal(_) => ("server_error", Some("internal_error"), None),
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }

    /// The error as one JSON line (for an SSE event after headers were sent).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        let headers = resp.headers_mut();
        match self {
            Self::QueueFull(_) | Self::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(short_retry_after()));
            }
            Self::Overloaded {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::Quota(r) => {
                let secs = r.retry_after_secs().unwrap_or_else(short_retry_after);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidRequest { param, message } => Self::BadRequest { message, param },
            EngineError::QueueFull {
                waiting,
                retry_after,
            } => Self::Overloaded {
                waiting,
                retry_after_secs: retry_after.as_secs_f64().round().max(1.0) as u64,
            },
            EngineError::NotRunning => Self::Unavailable("the engine is not running".into()),
            EngineError::Internal(m) => Self::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_statuses() {
        let e: ApiError = EngineError::invalid("temperature", "bad").into();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.body().error.param.as_deref(), Some("temperature"));
        let e: ApiError = EngineError::QueueFull {
            waiting: 3,
            retry_after: std::time::Duration::from_millis(7400),
        }
        .into();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        let resp = e.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], "7");
        let e: ApiError = EngineError::NotRunning.into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let e: ApiError = EngineError::Internal("x".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn quota_refusals_are_429_with_retry_after() {
        use crate::server::quota::Refusal;
        let e = ApiError::Quota(Refusal::DailyBudget {
            budget: 10,
            used: 10,
            needed: None,
            retry_after: std::time::Duration::from_secs(3600),
        });
        let v = serde_json::to_value(e.body()).unwrap();
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], "insufficient_quota");
        assert!(v["error"]["param"].is_null());
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "3600");
        let resp = ApiError::Quota(Refusal::Concurrency { limit: 2 }).into_response();
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn body_has_openai_shape() {
        let v = serde_json::to_value(ApiError::ModelNotFound("m".into()).body()).unwrap();
        let err = &v["error"];
        assert!(err["message"].as_str().unwrap().contains("`m`"));
        assert_eq!(err["type"], "invalid_request_error");
        assert_eq!(err["param"], "model");
        assert_eq!(err["code"], "model_not_found");
    }
}
