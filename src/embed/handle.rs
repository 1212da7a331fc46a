//! The handle the server holds for one encoder model: tokenization on a bounded pool,
//! a bounded number of requests in flight (429 beyond), and the worker thread behind a
//! channel. Like `EngineHandle`, it is all the HTTP layer sees of the model.

use super::tokenize::EncoderTokenizer;
use super::worker::{Job, Worker, WorkerStats};
use indus_models::encoder::{EncoderInput, PoolingModel};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Semaphore, oneshot};

/// What the model is for, which decides the endpoints it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingTask {
    /// /v1/embeddings
    Embed,
    /// /v1/rerank (a cross-encoder)
    Score,
}

impl PoolingTask {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embed => "embed",
            Self::Score => "score",
        }
    }
}

/// What requests are validated against.
#[derive(Debug, Clone)]
pub struct PoolingInfo {
    pub task: PoolingTask,
    pub dimensions: usize,
    pub max_input_tokens: usize,
    pub vocab_size: usize,
    /// Matryoshka: truncation to any size is allowed.
    pub any_dimensions: bool,
    /// Matryoshka: the sizes the model was trained for (also allowed).
    pub matryoshka_dimensions: Vec<usize>,
    /// Whether outputs are unit-normalized by the model's pipeline.
    pub normalized: bool,
    pub weight_bytes: usize,
    /// Inputs one request may carry.
    pub max_client_batch_size: usize,
}

#[derive(Debug, Clone)]
pub struct PoolingOptions {
    /// Padded tokens per forward batch.
    pub max_batch_tokens: usize,
    /// Requests queued or running at once; more get 429.
    pub max_concurrent_requests: usize,
    /// Threads that tokenize at once.
    pub tokenizer_threads: usize,
    /// Compute threads of this model's forward passes.
    pub compute_threads: usize,
    /// Scheduling niceness of those threads (Linux): positive values let a chat model on
    /// the same CPU cores keep priority over an embedding flood.
    pub nice: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolingError {
    #[error("the server is overloaded ({0} embedding requests in flight); retry later")]
    Overloaded(usize),
    #[error("the {0} model is not running")]
    Stopped(&'static str),
    #[error("{0}")]
    Failed(String),
}

struct Shared {
    info: PoolingInfo,
    tokenizer: EncoderTokenizer,
    alive: Arc<AtomicBool>,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    tokenize_slots: Semaphore,
    stats: Arc<WorkerStats>,
}

#[derive(Clone)]
pub struct PoolingHandle {
    shared: Arc<Shared>,
    tx: crossbeam_channel::Sender<Job>,
}

/// A snapshot for /metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolingStats {
    pub in_flight: usize,
    pub batches: u64,
    pub inputs: u64,
    pub tokens: u64,
    pub padded_tokens: u64,
    pub busy_seconds: f64,
}

/// Releases a request's in-flight slot however it ends (a dropped client included).
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PoolingHandle {
    /// Starts the model's worker thread.
    pub fn spawn(
        model: PoolingModel,
        tokenizer: EncoderTokenizer,
        info: PoolingInfo,
        opts: &PoolingOptions,
    ) -> std::io::Result<Self> {
        let alive = Arc::new(AtomicBool::new(true));
        let stats = Arc::new(WorkerStats::default());
        // Queue slots are bounded by the in-flight limit, so the channel never grows
        // past it.
        let (tx, rx) = crossbeam_channel::bounded(opts.max_concurrent_requests.max(1));
        let nice = opts.nice;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.compute_threads.max(1))
            .thread_name(|i| format!("indus-encoder-{i}"))
            .start_handler(move |_| set_nice(nice))
            .build()
            .map_err(std::io::Error::other)?;
        let worker = Worker {
            model,
            max_batch_tokens: opts.max_batch_tokens.max(1),
            stats: stats.clone(),
            alive: alive.clone(),
        };
        let worker_alive = alive.clone();
        std::thread::Builder::new()
            .name("indus-encoder".into())
            .spawn(move || {
                set_nice(nice);
                // candle's CPU kernels parallelise on the current rayon pool: this
                // model's own, so it never competes inside the chat engine's pool.
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    pool.install(|| worker.run(rx))
                }));
                if outcome.is_err() {
                    tracing::error!("the encoder worker panicked");
                }
                worker_alive.store(false, Ordering::SeqCst);
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                info,
                tokenizer,
                alive,
                in_flight: AtomicUsize::new(0),
                max_in_flight: opts.max_concurrent_requests.max(1),
                tokenize_slots: Semaphore::new(opts.tokenizer_threads.max(1)),
                stats,
            }),
            tx,
        })
    }

    pub fn info(&self) -> &PoolingInfo {
        &self.shared.info
    }

    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::SeqCst)
    }

    /// Runs `f` with the tokenizer on a blocking thread, at most `tokenizer_threads` at
    /// once, so long inputs never tie up the async runtime.
    pub async fn tokenize<T, F>(&self, f: F) -> Result<T, PoolingError>
    where
        T: Send + 'static,
        F: FnOnce(&EncoderTokenizer) -> T + Send + 'static,
    {
        let _permit = self
            .shared
            .tokenize_slots
            .acquire()
            .await
            .map_err(|_| PoolingError::Stopped("tokenizer"))?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.tokenizer))
            .await
            .map_err(|_| PoolingError::Failed("the tokenizer failed".into()))
    }

    /// Pools `inputs` (embeddings, or classifier logits for a cross-encoder), in order.
    pub async fn run(&self, inputs: Vec<EncoderInput>) -> Result<Vec<Vec<f32>>, PoolingError> {
        if !self.is_alive() {
            return Err(PoolingError::Stopped("encoder"));
        }
        let s = &self.shared;
        let before = s.in_flight.fetch_add(1, Ordering::SeqCst);
        let _slot = Slot(&s.in_flight);
        if before >= s.max_in_flight {
            return Err(PoolingError::Overloaded(before));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job { inputs, reply })
            .map_err(|_| PoolingError::Overloaded(before))?;
        match rx.await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(PoolingError::Failed(e)),
            Err(_) => Err(PoolingError::Stopped("encoder")),
        }
    }

    pub fn stats(&self) -> PoolingStats {
        let w = &self.shared.stats;
        PoolingStats {
            in_flight: self.shared.in_flight.load(Ordering::Relaxed),
            batches: w.batches.load(Ordering::Relaxed),
            inputs: w.inputs.load(Ordering::Relaxed),
            tokens: w.tokens.load(Ordering::Relaxed),
            padded_tokens: w.padded_tokens.load(Ordering::Relaxed),
            busy_seconds: w.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// Lowers the calling thread's scheduling priority (Linux: niceness is per thread).
fn set_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice != 0 {
        // SAFETY: plain syscalls on the calling thread's own id.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if rc != 0 {
            tracing::debug!(nice, "could not lower the encoder threads' priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}
