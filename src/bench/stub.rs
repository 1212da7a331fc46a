//! A stub OpenAI-compatible server for testing the load generator: it answers
//! /v1/completions and /v1/chat/completions with `max_tokens` one-token chunks, the first
//! after `ttft`, each next one `itl` later (deadlines from the request's arrival, so delays do
//! not drift), in OpenAI's streaming format, with a usage chunk when asked. Loopback only.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct StubConfig {
    /// Delay before the first token.
    pub ttft: Duration,
    /// Delay between tokens.
    pub itl: Duration,
    /// Require `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Answer every n-th request (1-based) with HTTP 500.
    pub fail_every: Option<usize>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StubArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    #[arg(long, default_value_t = 0.0)]
    pub ttft_ms: f64,
    #[arg(long, default_value_t = 0.0)]
    pub itl_ms: f64,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    pub max_seconds: f64,
}

struct Shared {
    cfg: StubConfig,
    requests: AtomicUsize,
}

/// A running stub; shut down when dropped.
pub struct StubServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl StubServer {
    /// Binds 127.0.0.1 on a free port and serves on the current tokio runtime.
    pub async fn start(cfg: StubConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", cfg).await
    }

    pub async fn start_on(addr: &str, cfg: StubConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        // Without TCP_NODELAY a chunk written while the headers await their (delayed) ACK
        // is held back by Nagle's algorithm: tens of milliseconds on the first token.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let shared = Arc::new(Shared {
            cfg,
            requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(tx),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `indus bench stub`: serve until killed or --max-seconds pass.
pub async fn serve(args: &StubArgs) -> anyhow::Result<()> {
    let cfg = StubConfig {
        ttft: Duration::from_secs_f64(args.ttft_ms / 1e3),
        itl: Duration::from_secs_f64(args.itl_ms / 1e3),
        ..Default::default()
    };
    let server = StubServer::start_on(&format!("{}:{}", args.host, args.port), cfg).await?;
    eprintln!("stub ready on http://{}", server.addr);
    tokio::time::sleep(Duration::from_secs_f64(args.max_seconds)).await;
    eprintln!("stub served {} requests", server.requests());
    Ok(())
}

#[derive(Deserialize)]
struct StubRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    prompt: Option<serde_json::Value>,
    #[serde(default)]
    messages: Option<Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

async fn completions(st: State<Arc<Shared>>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    answer(st, h, body, false).await
}

async fn chat(st: State<Arc<Shared>>, h: HeaderMap, body: axum::body::Bytes) -> Response {
    answer(st, h, body, true).await
}

fn error(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({"error": {"message": msg, "type": "stub_error", "param": null, "code": null}});
    (status, axum::Json(body)).into_response()
}

fn prompt_tokens(req: &StubRequest) -> usize {
    let words = |s: &str| s.split_whitespace().count();
    match (&req.prompt, &req.messages) {
        (Some(serde_json::Value::Array(a)), _) => a.len(),
        (Some(serde_json::Value::String(s)), _) => words(s),
        (_, Some(msgs)) => msgs
            .iter()
            .filter_map(|m| m.get("content").and_then(|c| c.as_str()))
            .map(words)
            .sum(),
        _ => 0,
    }
}

async fn answer(
    State(st): State<Arc<Shared>>,
    h: HeaderMap,
    body: axum::body::Bytes,
    chat: bool,
) -> Response {
    let arrival = Instant::now();
    let n = st.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(key) = &st.cfg.api_key {
        let ok = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(key.as_str());
        if !ok {
            return error(StatusCode::UNAUTHORIZED, "invalid API key");
        }
    }
    if st.cfg.fail_every.is_some_and(|k| k > 0 && n % k == 0) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected failure");
    }
    let req: StubRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let tokens = req.max_tokens.or(req.max_completion_tokens).unwrap_or(16);
    let prompt = prompt_tokens(&req);
    let model = req.model.clone().unwrap_or_else(|| "stub".into());
    let usage = serde_json::json!({
        "prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens
    });
    if !req.stream {
        tokio::time::sleep_until(
            arrival + st.cfg.ttft + st.cfg.itl * tokens.saturating_sub(1) as u32,
        )
        .await;
        let text = " tok".repeat(tokens);
        let choice = if chat {
            serde_json::json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"})
        } else {
            serde_json::json!({"index": 0, "text": text, "finish_reason": "length"})
        };
        return axum::Json(serde_json::json!({
            "id": "cmpl-stub", "object": if chat {"chat.completion"} else {"text_completion"},
            "created": 0, "model": model, "choices": [choice], "usage": usage
        }))
        .into_response();
    }
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let event = move |i: usize| -> String {
        let last = i + 1 == tokens;
        let finish = if last { "\"length\"" } else { "null" };
        let choice = if chat {
            format!(r#"{{"index":0,"delta":{{"content":" tok"}},"finish_reason":{finish}}}"#)
        } else {
            format!(r#"{{"index":0,"text":" tok","logprobs":null,"finish_reason":{finish}}}"#)
        };
        format!(
            "data: {{\"id\":\"cmpl-stub\",\"object\":\"{object}\",\"created\":0,\"model\":\"{model}\",\"choices\":[{choice}]}}\n\n"
        )
    };
    let tail = {
        let mut t = String::new();
        if include_usage {
            t.push_str(&format!(
                "data: {{\"id\":\"cmpl-stub\",\"object\":\"{object}\",\"created\":0,\"choices\":[],\"usage\":{usage}}}\n\n"
            ));
        }
        t.push_str("data: [DONE]\n\n");
        t
    };
    let sse = |body: Body| {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(body)
            .expect("a valid response")
    };
    let (ttft, itl) = (st.cfg.ttft, st.cfg.itl);
    if ttft.is_zero() && itl.is_zero() {
        let mut all: String = (0..tokens).map(&event).collect();
        all.push_str(&tail);
        return sse(Body::from(all));
    }
    let stream = futures::stream::unfold(0usize, move |i| {
        let event = event.clone();
        let tail = tail.clone();
        async move {
            if i > tokens {
                return None;
            }
            if i == tokens {
                return Some((Ok::<_, std::convert::Infallible>(tail), i + 1));
            }
            tokio::time::sleep_until(arrival + ttft + itl * i as u32).await;
            Some((Ok(event(i)), i + 1))
        }
    });
    sse(Body::from_stream(stream))
}
