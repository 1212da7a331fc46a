//! What every handler shares: the engine handle (once loaded), keys, metrics, audit log.

use super::admission::RequestCaps;
use super::audit::AuditLog;
use super::auth::{Auth, Caller};
use super::drain::Drain;
use super::error::ApiError;
use super::metrics::Metrics;
use super::quota::Quotas;
use super::tokenize_pool::TokenizePool;
use crate::embed::{PoolingHandle, PoolingInfo, PoolingTask};
use crate::engine::EngineHandle;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The engine and the names it is served under, set once the model has loaded.
pub struct Loaded {
    pub engine: EngineHandle,
    /// Names clients may use; the first is reported in responses.
    pub names: Vec<String>,
    /// Where the model came from (directory or hub id), shown as `root` in /v1/models.
    pub root: String,
    /// Block types of quantized weights (`gguf Q4_1+Q8_0`); `None` when dense.
    pub quantization: Option<String>,
    /// The decoder family (`Gemma3ForCausalLM`), shown in /v1/models.
    pub architecture: Option<String>,
    /// Unix seconds when the model became ready (`created` of /v1/models).
    pub created: u64,
    /// Set when the model serves embeddings (`--task embed`) instead of generation.
    pub embedding: Option<PoolingInfo>,
    /// Compiles structured-output constraints against this model's vocabulary.
    pub grammar: std::sync::Arc<crate::guided::LazyGrammarCompiler>,
    /// How this model writes tool calls (`--tool-call-parser`, else judged from the chat
    /// template); `None` refuses `tool_choice: auto`.
    pub tool_format: Option<crate::tools::ToolCallFormat>,
}

/// An encoder model (embeddings or reranking) served beside the chat model.
pub struct PoolingServed {
    pub handle: PoolingHandle,
    /// Names clients may use; the first is reported in responses.
    pub names: Vec<String>,
    pub root: String,
}

pub struct AppState {
    loaded: OnceLock<Loaded>,
    pooling: OnceLock<Vec<PoolingServed>>,
    /// Unix seconds when every model was loaded (`created` of /v1/models).
    models_ready: OnceLock<u64>,
    pub auth: Auth,
    /// Every key's quota (from the keys file) and where daily usage is kept.
    pub quotas: Quotas,
    pub metrics: Metrics,
    pub audit: Option<AuditLog>,
    pub max_body_bytes: usize,
    /// Per-request caps on prompts and choices, checked before tokenizing.
    pub caps: RequestCaps,
    /// Where prompts are tokenized and chat templates rendered (off the async runtime).
    pub tokenize_pool: TokenizePool,
    draining: AtomicBool,
    /// API requests in flight, and the signal that cuts them at the shutdown timeout.
    pub drain: Drain,
}

impl AppState {
    pub fn new(
        auth: Auth,
        metrics: Metrics,
        audit: Option<AuditLog>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            loaded: OnceLock::new(),
            pooling: OnceLock::new(),
            models_ready: OnceLock::new(),
            quotas: Quotas::new(auth.quotas()),
            auth,
            metrics,
            audit,
            max_body_bytes,
            caps: RequestCaps::default(),
            tokenize_pool: TokenizePool::per_core(),
            draining: AtomicBool::new(false),
            drain: Drain::default(),
        }
    }

    /// Sets the per-request caps (`--max-prompts-per-request`, `--max-n`, `--max-num-seqs`).
    pub fn with_caps(mut self, caps: RequestCaps) -> Self {
        self.caps = caps;
        self
    }

    /// Replaces the quotas (to persist them under `--state-dir`, or inject a clock).
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    /// Marks the models loaded (a chat model, encoders, or both); the server is ready from
    /// now on.
    pub fn set_loaded(&self, chat: Option<Loaded>, pooling: Vec<PoolingServed>, created: u64) {
        if let Some(l) = chat {
            let _ = self.loaded.set(l);
        }
        let _ = self.pooling.set(pooling);
        let _ = self.models_ready.set(created);
    }

    /// The chat model, once loaded (`None` also when the server serves only encoders).
    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// The encoder models (empty until loaded).
    pub fn pooling(&self) -> &[PoolingServed] {
        self.pooling.get().map_or(&[], Vec::as_slice)
    }

    /// When the models became ready.
    pub fn created(&self) -> Option<u64> {
        self.models_ready.get().copied()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ready: every model loaded, the engine loop and encoder workers alive, not shutting
    /// down.
    pub fn is_ready(&self) -> bool {
        !self.is_draining()
            && self.created().is_some()
            && self.loaded().is_none_or(|l| l.engine.is_alive())
            && self.pooling().iter().all(|p| p.handle.is_alive())
    }

    /// Why [`Self::is_ready`] is false (a 503).
    pub fn not_ready_reason(&self) -> ApiError {
        match self.check_serving() {
            Err(e) => e,
            Ok(()) => ApiError::Unavailable("a model is not running".into()),
        }
    }

    fn check_serving(&self) -> Result<(), ApiError> {
        if self.is_draining() {
            return Err(ApiError::ShuttingDown);
        }
        if self.created().is_none() {
            return Err(ApiError::Unavailable("the model is still loading".into()));
        }
        Ok(())
    }

    /// The chat engine, or 503 while loading, after it died, or while shutting down; 400
    /// when this server serves only encoder models.
    pub fn ready_engine(&self) -> Result<&Loaded, ApiError> {
        self.check_serving()?;
        let loaded = self.loaded().ok_or_else(|| {
            ApiError::bad(
                "model",
                format!(
                    "this server serves no generative model, only encoder models ({}): use /v1/embeddings or /v1/rerank",
                    self.pooling()
                        .iter()
                        .map(|p| p.names[0].as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !loaded.engine.is_alive() {
            return Err(ApiError::Unavailable("the engine is not running".into()));
        }
        Ok(loaded)
    }

    /// The chat model when it serves embeddings (`--task embed`) and the request names
    /// it (or names nothing and no encoder serves embeddings); `None` otherwise.
    pub fn decoder_embedder(
        &self,
        requested: Option<&str>,
        caller: &Caller,
    ) -> Option<Result<(&Loaded, String), ApiError>> {
        let loaded = self.loaded().filter(|l| l.embedding.is_some())?;
        let requested = requested.filter(|m| !m.is_empty());
        let encoder_embeds = self
            .pooling()
            .iter()
            .any(|p| p.handle.info().task == PoolingTask::Embed);
        let named = match requested {
            Some(m) => loaded.names.iter().any(|n| n == m),
            None => !encoder_embeds,
        };
        if !named {
            return None;
        }
        Some(self.ready_engine().and_then(|l| {
            let name = l.resolve_model(requested, caller)?;
            Ok((l, name))
        }))
    }

    /// The encoder model a request to an endpoint of `task` names (the first of that
    /// task the caller may use when it names none). A model of another task is a 400
    /// naming the endpoint it does serve; an unknown or forbidden one a 404.
    pub fn ready_pooling(
        &self,
        requested: Option<&str>,
        caller: &Caller,
        task: PoolingTask,
    ) -> Result<(&PoolingServed, String), ApiError> {
        self.check_serving()?;
        let endpoint = |t: PoolingTask| match t {
            PoolingTask::Embed => "/v1/embeddings",
            PoolingTask::Score => "/v1/rerank",
        };
        let requested = requested.filter(|m| !m.is_empty());
        let found = match requested {
            Some(m) => self
                .pooling()
                .iter()
                .find(|p| p.names.iter().any(|n| n == m))
                .map(|p| (p, m.to_string())),
            None => self.pooling().iter().find_map(|p| {
                let name = p.names.iter().find(|n| caller.may_use(n))?;
                (p.handle.info().task == task).then(|| (p, name.clone()))
            }),
        };
        let Some((served, name)) = found else {
            if let Some(m) = requested
                && self
                    .loaded()
                    .is_some_and(|l| l.names.iter().any(|n| n == m))
                && caller.may_use(m)
            {
                return Err(ApiError::bad(
                    "model",
                    format!(
                        "model `{m}` is a generative model; it does not serve {}",
                        endpoint(task)
                    ),
                ));
            }
            return Err(match requested {
                Some(m) => ApiError::ModelNotFound(m.to_string()),
                None => ApiError::bad(
                    "model",
                    format!("this server serves no model for {}", endpoint(task)),
                ),
            });
        };
        if !caller.may_use(&name) {
            return Err(ApiError::ModelNotFound(name));
        }
        let actual = served.handle.info().task;
        if actual != task {
            return Err(ApiError::bad(
                "model",
                format!(
                    "model `{name}` is a{} model; it serves {}, not {}",
                    if actual == PoolingTask::Score {
                        " reranker"
                    } else {
                        "n embedding"
                    },
                    endpoint(actual),
                    endpoint(task)
                ),
            ));
        }
        if !served.handle.is_alive() {
            return Err(ApiError::Unavailable(format!(
                "the model `{name}` is not running"
            )));
        }
        Ok((served, name))
    }
}

impl Loaded {
    /// 400 for chat/completions on a model served for embeddings.
    pub fn require_generate(&self, name: &str) -> Result<(), ApiError> {
        if self.embedding.is_some() {
            return Err(ApiError::bad(
                "model",
                format!(
                    "model `{name}` is served as an embedding model (--task embed): use /v1/embeddings"
                ),
            ));
        }
        Ok(())
    }

    /// The served name a request refers to (the first when it names none), if the caller
    /// may use it; 404 otherwise.
    pub fn resolve_model(
        &self,
        requested: Option<&str>,
        caller: &Caller,
    ) -> Result<String, ApiError> {
        let name = match requested.filter(|m| !m.is_empty()) {
            Some(m) => self
                .names
                .iter()
                .find(|n| n.as_str() == m)
                .ok_or_else(|| ApiError::ModelNotFound(m.to_string()))?,
            None => self
                .names
                .iter()
                .find(|n| caller.may_use(n))
                .ok_or_else(|| ApiError::ModelNotFound(self.names[0].clone()))?,
        };
        if !caller.may_use(name) {
            return Err(ApiError::ModelNotFound(name.clone()));
        }
        Ok(name.clone())
    }
}
