//! What every handler shares: the engine handle (once loaded), keys, metrics, audit log.

use super::audit::AuditLog;
use super::auth::{Auth, Caller};
use super::error::ApiError;
use super::metrics::Metrics;
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
    /// Unix seconds when the model became ready (`created` of /v1/models).
    pub created: u64,
}

pub struct AppState {
    loaded: OnceLock<Loaded>,
    pub auth: Auth,
    pub metrics: Metrics,
    pub audit: Option<AuditLog>,
    pub max_body_bytes: usize,
    draining: AtomicBool,
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
            auth,
            metrics,
            audit,
            max_body_bytes,
            draining: AtomicBool::new(false),
        }
    }

    /// Marks the model loaded; the server is ready from now on.
    pub fn set_loaded(&self, loaded: Loaded) {
        let _ = self.loaded.set(loaded);
    }

    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Ready: model loaded, engine loop alive, not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.loaded().is_some_and(|l| l.engine.is_alive())
    }

    /// The engine, or 503 while loading, after it died, or while shutting down.
    pub fn ready_engine(&self) -> Result<&Loaded, ApiError> {
        if self.is_draining() {
            return Err(ApiError::Unavailable("the server is shutting down".into()));
        }
        let loaded = self
            .loaded()
            .ok_or_else(|| ApiError::Unavailable("the model is still loading".into()))?;
        if !loaded.engine.is_alive() {
            return Err(ApiError::Unavailable("the engine is not running".into()));
        }
        Ok(loaded)
    }
}

impl Loaded {
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
