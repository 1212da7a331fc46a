//! The HTTP server (`indus serve`): an OpenAI-compatible API over the engine handle, plus
//! health, readiness, Prometheus metrics, API keys and an audit log. It never touches
//! engine state — only `EngineHandle`.

pub mod admission;
pub mod args;
pub mod audit;
pub mod auth;
mod body;
pub mod conn;
pub mod drain;
pub mod error;
mod generate;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod quota;
mod record;
pub mod shutdown;
mod sse;
pub mod state;
mod tokenize_pool;

pub use args::ServeArgs;
pub use shutdown::{Reason, Shutdown};

use crate::engine::{EngineHandle, FinishReason};
use anyhow::Context;
use audit::AuditLog;
use auth::Auth;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use error::ApiError;
use state::{AppState, Loaded};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The API port's routes. /health, /ready and /openapi.json are open (probes carry no key;
/// the document holds no secret and clients read it before they have one); everything
/// else — the API, `/metrics` (per-key names and usage), and even the 404 and 405 answers
/// (which would tell a stranger what is served) — needs a key when keys are set.
/// Key quotas are enforced on the inference routes and reported on all authenticated ones.
/// `serve_metrics` is false when `--metrics-port` serves /metrics on its own listener.
pub fn router(state: Arc<AppState>, serve_metrics: bool) -> Router {
    let inference = Router::new()
        .route("/v1/completions", post(openai::completions::create))
        .route("/v1/chat/completions", post(openai::chat::create))
        .route("/v1/embeddings", post(openai::embeddings::create))
        .route("/v1/rerank", post(openai::rerank::create))
        .route("/v2/rerank", post(openai::rerank::create))
        .route("/rerank", post(openai::rerank::create))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            quota::layer::admit,
        ));
    let mut api = Router::new()
        .merge(inference)
        .route("/v1/models", get(openai::models::list))
        .route("/v1/models/{*id}", get(openai::models::get))
        .route("/tokenize", post(openai::tokenize::tokenize))
        .route("/detokenize", post(openai::tokenize::detokenize));
    if serve_metrics {
        api = api.route("/metrics", get(metrics_text));
    }
    // The fallbacks are set before the layer so that it wraps them too.
    let api = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            quota::layer::headers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let probes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi::serve))
        .method_not_allowed_fallback(method_not_allowed);
    probes.merge(api).with_state(state)
}

/// The `--metrics-port` listener's routes: /metrics, open to whoever can reach the port
/// (keep it on a network only Prometheus sees), and /health.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The process is up (the model may still be loading).
async fn health() -> StatusCode {
    StatusCode::OK
}

/// The model is loaded and the engine loop alive; 503 otherwise and while shutting down.
async fn ready(State(st): State<Arc<AppState>>) -> Response {
    if st.is_ready() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    st.not_ready_reason().into_response()
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    let now = st.quotas.now();
    for q in st.quotas.keys() {
        st.metrics.set_quota(
            q.name(),
            q.used_today(now),
            q.limits().daily_token_budget,
            q.in_flight(),
        );
    }
    let pooling: Vec<(&str, crate::embed::PoolingStats)> = st
        .pooling()
        .iter()
        .map(|p| (p.names[0].as_str(), p.handle.stats()))
        .collect();
    let body = st.metrics.render(st.loaded().map(|l| &l.engine), &pooling);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// A fresh response id, e.g. `cmpl-3f9c…`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// OpenAI's finish_reason strings.
pub(crate) fn finish_str(f: FinishReason) -> &'static str {
    f.as_str()
}

pub(crate) fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// What the model loader hands the server: a chat engine, encoder models, or both.
pub struct LoadedModel {
    pub engine: Option<EngineHandle>,
    /// Encoder models (embeddings, rerankers) served beside it.
    pub pooling: Vec<crate::embed::StartedPooling>,
    /// The model's name (directory, hub id or the embedded model's name).
    pub name: String,
    /// Block types the weights keep (`gguf Q4_1+Q8_0`), shown in /v1/models.
    pub quantization: Option<String>,
    /// The chat model's architecture (`Gemma3ForCausalLM`), shown in /v1/models.
    pub architecture: Option<String>,
    /// Set when the chat model serves embeddings (`--task embed`) instead of generation.
    pub embedding: Option<crate::embed::PoolingInfo>,
}

/// A bound server whose model may not be loaded yet.
pub struct Server {
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
    served_names: Vec<String>,
    tool_call_parser: Option<crate::tools::ToolCallFormat>,
    conn_limits: conn::ConnLimits,
    /// `--metrics-port`'s listener, when set.
    metrics_listener: Option<tokio::net::TcpListener>,
}

impl Server {
    /// Binds --host/--port and prepares keys, metrics and the audit log.
    pub async fn bind(args: &ServeArgs) -> anyhow::Result<Self> {
        if args.tensor_parallel_size != 1 {
            anyhow::bail!("--tensor-parallel-size other than 1 is not supported");
        }
        let auth = Auth::new(&args.api_keys, args.api_keys_file.as_deref())?;
        let audit = args
            .audit_log
            .as_deref()
            .map(|p| {
                AuditLog::open(p, args.audit_log_content)
                    .with_context(|| format!("cannot open the audit log {}", p.display()))
            })
            .transpose()?;
        let fds = conn::fd_limit::raise_nofile_limit();
        let max_connections =
            conn::fd_limit::connection_cap(args.max_connections, fds.map(|f| f.soft));
        match fds {
            Some(f) => tracing::info!(
                soft_before = f.soft_before,
                soft = f.soft,
                hard = f.hard,
                max_connections,
                "open-file limit"
            ),
            None => tracing::info!(max_connections, "open-file limit unknown"),
        }
        if max_connections < args.max_connections {
            tracing::warn!(
                requested = args.max_connections,
                max_connections,
                "--max-connections lowered to fit the open-file limit"
            );
        }
        let conn_limits = conn::ConnLimits {
            header_timeout: args.http_header_timeout,
            body_timeout: args.http_body_timeout,
            keep_alive_timeout: args.http_keep_alive_timeout,
            max_connections,
        };
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let metrics_listener = match args.metrics_port {
            Some(port) => {
                let l = tokio::net::TcpListener::bind((args.host.as_str(), port))
                    .await
                    .with_context(|| {
                        format!("cannot listen on {}:{port} (--metrics-port)", args.host)
                    })?;
                tracing::info!(addr = %l.local_addr()?, "metrics listening");
                Some(l)
            }
            None => None,
        };
        if auth.enabled() {
            tracing::info!(keys = auth.len(), "API keys required");
        } else {
            tracing::warn!("no API keys set: the API is open to anyone who can reach it");
        }
        if args.audit_log_content {
            tracing::warn!("the audit log records prompt and completion text");
        }
        let mut quotas = quota::Quotas::new(auth.quotas());
        match &args.state_dir {
            Some(dir) => {
                quotas = quotas
                    .persist_in(dir)
                    .context("cannot use --state-dir for the quota state")?;
            }
            None if quotas.has_daily_budgets() => tracing::warn!(
                "keys have daily token budgets but no --state-dir is set: a restart resets them"
            ),
            None => {}
        }
        if !quotas.keys().is_empty() {
            tracing::info!(keys = quotas.keys().len(), "key quotas enforced");
        }
        let state = Arc::new(
            AppState::new(
                auth,
                metrics::Metrics::new(),
                audit,
                args.max_request_body_bytes,
            )
            .with_quotas(quotas)
            .with_caps(admission::RequestCaps {
                max_prompts: args.max_prompts_per_request.max(1),
                max_n: args.max_n.max(1),
                max_seqs: args.sched.max_num_seqs.max(1),
            }),
        );
        Ok(Self {
            state,
            listener,
            shutdown: Shutdown::default(),
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
            served_names: args
                .served_model_name
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            tool_call_parser: args.tool_call_parser,
            conn_limits,
            metrics_listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The `--metrics-port` listener's address, when there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves: answers 503 while `load` runs (on a blocking thread), logs "ready" once it
    /// returns, and runs until shutdown is triggered. Then drains: the listener stays open,
    /// `/ready` and new API requests answer 503, and requests in flight get up to the
    /// shutdown timeout to end, after which they are cut (an error event ends a stream).
    /// Errs when loading failed or the engine died.
    pub async fn run<L>(self, load: L) -> anyhow::Result<()>
    where
        L: FnOnce() -> anyhow::Result<LoadedModel> + Send + 'static,
    {
        let Self {
            state,
            listener,
            shutdown,
            shutdown_timeout,
            served_names,
            tool_call_parser,
            conn_limits,
            metrics_listener,
        } = self;
        let addr = listener.local_addr()?;
        let app = router(state.clone(), metrics_listener.is_none());
        let (close, close_rx) = tokio::sync::watch::channel(false);
        if let Some(l) = metrics_listener {
            let limits = conn::ConnLimits {
                max_connections: METRICS_MAX_CONNECTIONS,
                ..conn_limits
            };
            tokio::spawn(conn::serve(
                l,
                metrics_router(state.clone()),
                limits,
                shutdown.clone(),
                close_rx.clone(),
            ));
        }
        let server = tokio::spawn(conn::serve(
            listener,
            app,
            conn_limits,
            shutdown.clone(),
            close_rx,
        ));
        tracing::info!(%addr, "listening; loading the model");

        let loading = tokio::task::spawn_blocking(load);
        let loaded = tokio::select! {
            r = loading => r.context("the model loader panicked")?,
            reason = shutdown.wait() => {
                tracing::info!(?reason, "shutting down before the model loaded");
                server.abort();
                return Ok(());
            }
        };
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                shutdown.trigger(Reason::EngineDied);
                server.abort();
                return Err(e.context("cannot load the model"));
            }
        };
        let main_names = if served_names.is_empty() {
            vec![loaded.name.clone()]
        } else {
            served_names
        };
        let created = unix_now();
        let mut pooling = Vec::new();
        let mut first_pooling = true;
        for p in loaded.pooling {
            // --served-model-name names the main model: an encoder when no chat model is.
            let names = if loaded.engine.is_none() && std::mem::take(&mut first_pooling) {
                main_names.clone()
            } else {
                vec![p.name]
            };
            pooling.push(state::PoolingServed {
                handle: p.handle,
                names,
                root: p.root,
            });
        }
        let chat = loaded.engine.map(|engine| {
            let tool_format = tool_call_parser.or_else(|| {
                engine
                    .tokenizer()
                    .chat_template_source()
                    .and_then(crate::tools::ToolCallFormat::detect)
            });
            tracing::info!(
                tool_call_parser = tool_format.map(|f| f.name()).unwrap_or("none"),
                "tool calls"
            );
            Loaded {
                tool_format,
                grammar: Arc::new(crate::guided::LazyGrammarCompiler::new(
                    engine.tokenizer().clone(),
                )),
                engine,
                names: main_names.clone(),
                root: loaded.name,
                quantization: loaded.quantization,
                architecture: loaded.architecture,
                created,
                embedding: loaded.embedding,
            }
        });
        let engine = chat.as_ref().map(|c| c.engine.clone());
        let workers: Vec<_> = pooling.iter().map(|p| p.handle.clone()).collect();
        state.set_loaded(chat, pooling, created);
        tokio::spawn(watch_engine(engine, workers, shutdown.clone()));
        tokio::spawn(metrics_upkeep(state.clone(), shutdown.clone()));
        tokio::spawn(quota_upkeep(state.clone(), shutdown.clone()));
        tracing::info!(%addr, model = %main_names[0], "ready");

        let reason = shutdown.wait().await;
        state.start_draining();
        tracing::info!(
            ?reason,
            timeout_s = shutdown_timeout.as_secs(),
            in_flight = state.drain.in_flight(),
            "shutting down: /ready and new requests answer 503; draining in-flight requests"
        );
        if tokio::time::timeout(shutdown_timeout, state.drain.idle())
            .await
            .is_ok()
        {
            tracing::info!("drained");
        } else {
            tracing::warn!(
                in_flight = state.drain.in_flight(),
                "shutdown timeout reached; cutting the requests still in flight"
            );
            state.drain.cut();
            let _ = tokio::time::timeout(CUT_GRACE, state.drain.idle()).await;
        }
        // Stop accepting; each connection ends once its response in progress is written.
        let _ = close.send(true);
        let abort = server.abort_handle();
        match tokio::time::timeout(CLOSE_GRACE, server).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!("connections still open after the drain; dropping them");
                abort.abort();
            }
        }
        // The drain is over: no token is charged after this.
        save_quotas(state.clone()).await;
        if reason == Reason::EngineDied {
            anyhow::bail!("the engine thread died; in-flight requests were failed");
        }
        Ok(())
    }
}

/// Connections the `--metrics-port` listener keeps open at most (scrapers are few).
const METRICS_MAX_CONNECTIONS: usize = 64;
/// After the shutdown timeout cut the requests in flight: how long their error events
/// (and non-streamed 503s) get to be produced.
const CUT_GRACE: Duration = Duration::from_secs(2);
/// After the drain: how long connections get to write their last response and close.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// Triggers shutdown when the engine loop or an encoder worker stops (a panic in its
/// thread).
async fn watch_engine(
    engine: Option<EngineHandle>,
    workers: Vec<crate::embed::PoolingHandle>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = shutdown.wait() => return,
        }
        let engine_died = engine.as_ref().is_some_and(|e| !e.is_alive());
        if engine_died || workers.iter().any(|w| !w.is_alive()) {
            tracing::error!("the engine loop or an encoder worker stopped; shutting down");
            shutdown.trigger(Reason::EngineDied);
            return;
        }
    }
}

async fn metrics_upkeep(state: Arc<AppState>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => state.metrics.upkeep(),
            _ = shutdown.wait() => return,
        }
    }
}

/// How often changed daily usage is written to `--state-dir` (a crash loses at most this
/// much of it; a clean shutdown loses none).
const QUOTA_SAVE_EVERY: Duration = Duration::from_secs(1);

async fn quota_upkeep(state: Arc<AppState>, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(QUOTA_SAVE_EVERY) => save_quotas(state.clone()).await,
            _ = shutdown.wait() => return,
        }
    }
}

/// Writes the quota state if it changed, off the async runtime.
async fn save_quotas(state: Arc<AppState>) {
    match tokio::task::spawn_blocking(move || state.quotas.save_if_dirty()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot save the quota state"),
        Err(e) => tracing::error!(error = %e, "saving the quota state panicked"),
    }
}

/// `indus serve`: bind, load the model, serve until SIGTERM/SIGINT, drain, return.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let server = Server::bind(&args).await?;
    let shutdown = server.shutdown();
    tokio::spawn(async move {
        let sig = shutdown::signal().await;
        tracing::info!(signal = sig, "signal received");
        shutdown.trigger(Reason::Signal);
    });
    server.run(move || load_models(&args)).await
}

/// The chat model (unless MODEL is an encoder checkpoint) and every --embedding-model.
pub fn load_models(args: &ServeArgs) -> anyhow::Result<LoadedModel> {
    let main_is_encoder = crate::embed::is_encoder_model(&args.model);
    let (engine, name, quantization, architecture) = if main_is_encoder {
        (None, String::new(), None, None)
    } else {
        let (engine, summary) = crate::loader::start_engine(&args.model, &args.cache, &args.sched)?;
        (
            Some(engine),
            summary.name,
            summary.quantization,
            Some(summary.architecture.to_string()),
        )
    };
    let embedding = match &engine {
        Some(e) => crate::embed::decoder_embedding(
            &args.model,
            &args.task,
            e.limits(),
            args.pooling.max_client_batch_size,
        )?,
        None => None,
    };
    // Encoders share the CPU cores with chat decoding: a lower priority keeps an
    // embedding flood from slowing every chat token. Chat's pool workers wait on one
    // another each op, so even a small share taken from one core stalls the whole step:
    // at nice 10 a flood took 1.28–1.48× off TPOT on 2 cores, at 19 1.00×.
    let nice = if engine.is_some() && args.model.device == "cpu" {
        args.pooling.encoder_nice
    } else {
        0
    };
    let mut specs: Vec<String> = Vec::new();
    if main_is_encoder && let Ok(Some(m)) = args.model.model_name() {
        specs.push(m.to_string());
    }
    specs.extend(
        args.pooling
            .embedding_models
            .iter()
            .filter(|m| !m.is_empty())
            .cloned(),
    );
    let mut pooling = Vec::new();
    for spec in &specs {
        let p = crate::embed::start_pooling(
            spec,
            args.model
                .revision
                .as_deref()
                .filter(|_| main_is_encoder && pooling.is_empty()),
            &args.model.device,
            &args.pooling,
            nice,
        )
        .with_context(|| format!("cannot load the encoder model {spec}"))?;
        pooling.push(p);
    }
    let name = match (&engine, pooling.first()) {
        (None, Some(p)) => p.name.clone(),
        _ => name,
    };
    Ok(LoadedModel {
        engine,
        pooling,
        name,
        quantization,
        architecture,
        embedding,
    })
}
