//! Tokenizing and chat-template rendering off the async runtime: a long prompt takes tens of
//! milliseconds of CPU, and on the runtime's few threads it would stall every other
//! connection (`/health` included). At most `slots` run at once on blocking threads; the
//! rest wait their turn.

use super::error::ApiError;
use tokio::sync::Semaphore;

pub struct TokenizePool {
    slots: Semaphore,
}

impl TokenizePool {
    pub fn new(slots: usize) -> Self {
        Self {
            slots: Semaphore::new(slots.max(1)),
        }
    }

    /// One slot per available core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Runs `f` on a blocking thread once a slot is free.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::Internal(format!("tokenizing failed: {e}")))?
    }
}
