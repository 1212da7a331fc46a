//! The quotas in the request path: [`admit`] wraps the inference routes and refuses a
//! request over its key's limits before it is read, holding the key's concurrency permit
//! until the response body — a whole stream included — has been sent or dropped;
//! [`headers`] wraps every API route and reports the key's standing in OpenAI's
//! `x-ratelimit-*` headers (plus `-tokens-day` ones for the daily budget).

use super::key::{Permit, Snapshot, Window};
use super::limits::human;
use crate::server::auth::Caller;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Middleware on the inference routes (completions, chat, embeddings, rerank).
pub async fn admit(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(quota) = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.quota.clone())
    else {
        return next.run(req).await;
    };
    let permit = match quota.admit(st.quotas.now()) {
        Ok(p) => p,
        Err(refusal) => {
            st.metrics
                .count_quota_rejection(quota.name(), refusal.reason());
            st.metrics.count_rejected("429");
            let client = req.extensions().get::<Caller>().and_then(|c| c.client_addr);
            crate::server::auth::audit_rejected(&st, &req, client, Some(quota.name()), 429);
            tracing::info!(key = %quota.name(), reason = refusal.reason(), "refused: over quota");
            return ApiError::Quota(refusal).into_response();
        }
    };
    next.run(req)
        .await
        .map(|b| Body::new(PermitBody::new(b, permit)))
}

/// Middleware on every API route: the `x-ratelimit-*` headers of the caller's key.
pub async fn headers(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let quota = req
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.quota.clone());
    let mut resp = next.run(req).await;
    if let Some(q) = quota {
        insert(resp.headers_mut(), &q.snapshot(st.quotas.now()));
    }
    resp
}

/// Writes the headers of each limit the key has.
pub fn insert(h: &mut HeaderMap, s: &Snapshot) {
    let mut put = |kind: &str, w: &Window| {
        for (what, value) in [
            ("limit", w.limit.to_string()),
            ("remaining", w.remaining.to_string()),
            ("reset", human(w.reset)),
        ] {
            if let (Ok(name), Ok(v)) = (
                HeaderName::try_from(format!("x-ratelimit-{what}-{kind}")),
                HeaderValue::try_from(value),
            ) {
                h.insert(name, v);
            }
        }
    };
    if let Some(w) = &s.requests {
        put("requests", w);
    }
    if let Some(w) = &s.tokens {
        put("tokens", w);
    }
    if let Some(w) = &s.daily {
        put("tokens-day", w);
    }
}

/// A response body that gives its key's concurrency permit back once the last frame is
/// out (not only when hyper drops it), so a client that read the whole response and at
/// once sends the next request finds the slot free.
struct PermitBody {
    inner: Body,
    permit: Option<Permit>,
}

impl PermitBody {
    fn new(inner: Body, permit: Permit) -> Self {
        let mut b = Self {
            inner,
            permit: Some(permit),
        };
        if http_body::Body::is_end_stream(&b.inner) {
            b.permit = None;
        }
        b
    }
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::quota::{KeyLimits, KeyQuota};
    use http_body::Body as _;
    use std::time::Duration;

    /// Reads a body to its end, frame by frame, as hyper does.
    async fn collect(mut b: PermitBody) -> (Vec<u8>, PermitBody) {
        let mut out = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await {
            if let Ok(d) = f.unwrap().into_data() {
                out.extend_from_slice(&d);
            }
        }
        (out, b)
    }

    #[tokio::test]
    async fn the_permit_is_back_when_the_body_ends() {
        let q = Arc::new(KeyQuota::new(
            "k".into(),
            KeyLimits {
                max_concurrent_requests: Some(1),
                ..Default::default()
            },
            Duration::ZERO,
        ));
        let stream = futures::stream::iter(["a", "b"].map(Ok::<_, std::io::Error>));
        let body = PermitBody::new(Body::from_stream(stream), q.admit(Duration::ZERO).unwrap());
        assert_eq!(q.in_flight(), 1);
        let (bytes, body) = collect(body).await;
        assert_eq!(bytes, b"ab");
        // Released at the end of the stream, before the body itself is dropped.
        assert_eq!(q.in_flight(), 0);
        drop(body);
        let body = PermitBody::new(Body::empty(), q.admit(Duration::ZERO).unwrap());
        assert_eq!(q.in_flight(), 0);
        drop(body);
        let body = PermitBody::new(Body::from("x"), q.admit(Duration::ZERO).unwrap());
        assert_eq!(q.in_flight(), 1);
        drop(body);
        assert_eq!(q.in_flight(), 0);
    }

    #[test]
    fn headers_use_openai_names() {
        let mut h = HeaderMap::new();
        insert(
            &mut h,
            &Snapshot {
                requests: Some(Window {
                    limit: 60,
                    remaining: 59,
                    reset: Duration::from_secs(1),
                }),
                tokens: None,
                daily: Some(Window {
                    limit: 1000,
                    remaining: 10,
                    reset: Duration::from_secs(3600),
                }),
            },
        );
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-remaining-requests"], "59");
        assert_eq!(h["x-ratelimit-reset-requests"], "1s");
        assert!(h.get("x-ratelimit-limit-tokens").is_none());
        assert_eq!(h["x-ratelimit-remaining-tokens-day"], "10");
        assert_eq!(h["x-ratelimit-reset-tokens-day"], "1h0m0s");
    }
}
