//! `EngineHandle`: the only way in. It validates a request against the engine's limits,
//! hands it to the engine thread and returns a stream of its outputs; dropping the stream
//! aborts the request, and its blocks are freed at the next step.

use super::core::Engine;
use super::drain::DrainRate;
use super::output::{FinishReason, RequestOutput, RequestTimes, StopReason, TokenLogprob};
use super::request::Request;
use super::stats::{EngineStats, StatsSnapshot};
use super::tenant_load::{TenantLoad, TenantSlot};
use crate::tokenizer::Tokenizer;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::sync::mpsc;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong; `param` names the field (OpenAI's `param`).
    #[error("{message}")]
    InvalidRequest {
        param: Option<String>,
        message: String,
    },
    /// `waiting` sequences are ahead; `retry_after` is when the queue should have drained.
    #[error("{waiting} sequences are already waiting; retry later")]
    QueueFull {
        waiting: usize,
        retry_after: std::time::Duration,
    },
    #[error("the engine is not running")]
    NotRunning,
    #[error("internal engine error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            param: Some(param.to_string()),
            message: message.into(),
        }
    }
}

pub(super) type OutputSender = mpsc::UnboundedSender<Result<RequestOutput, EngineError>>;

pub(super) struct NewRequest {
    pub key: u64,
    pub request: Request,
    pub tx: OutputSender,
}

pub(super) enum Command {
    Add(Box<NewRequest>),
    Abort(u64),
}

/// What a request may ask for, fixed when the engine starts.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    pub max_model_len: usize,
    pub vocab_size: usize,
    pub max_waiting_requests: usize,
    /// Width of the final hidden state (an embedding request's output).
    pub hidden_size: usize,
    /// Sequences the scheduler runs at once (`--max-num-seqs`).
    pub max_num_seqs: usize,
    /// Tokens per KV-cache block (prefix-aware routers hash prompts in these units).
    pub block_size: usize,
}

impl EngineLimits {
    /// Checks a request against these limits: what [`EngineHandle::validate`] does, pure
    /// (no engine needed), so the request fuzzer runs the same checks as the server.
    pub fn check(&self, req: &Request) -> Result<(), EngineError> {
        req.params
            .validate()
            .map_err(|(param, msg)| EngineError::invalid(param, msg))?;
        let prompt_len = req.prompt_token_ids.len();
        if prompt_len == 0 {
            return Err(EngineError::invalid("prompt", "the prompt is empty"));
        }
        if let Some(bad) = req
            .prompt_token_ids
            .iter()
            .find(|&&t| t as usize >= self.vocab_size)
        {
            return Err(EngineError::invalid(
                "prompt",
                format!(
                    "token id {bad} is outside the vocabulary (size {})",
                    self.vocab_size
                ),
            ));
        }
        let max_len = self.max_model_len;
        if req.embed {
            if req.params.n != 1 {
                return Err(EngineError::invalid(
                    "n",
                    "an embedding request has one choice",
                ));
            }
            if prompt_len > max_len {
                return Err(EngineError::invalid(
                    "input",
                    format!(
                        "input has {prompt_len} tokens, more than the model's limit of {max_len} tokens"
                    ),
                ));
            }
            return Ok(());
        }
        if prompt_len + req.params.max_tokens > max_len {
            return Err(EngineError::invalid(
                "max_tokens",
                format!(
                    "This model's maximum context length is {max_len} tokens. However, you requested {} tokens ({prompt_len} in the messages, {} in the completion). Please reduce the length of the messages or completion.",
                    prompt_len + req.params.max_tokens,
                    req.params.max_tokens
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct EngineHandle {
    tx: crossbeam_channel::Sender<Command>,
    next_key: Arc<AtomicU64>,
    limits: EngineLimits,
    stats: Arc<EngineStats>,
    /// Sequences submitted and not yet in the engine's published gauges.
    in_transit: Arc<AtomicUsize>,
    drain: Arc<DrainRate>,
    /// Sequences per tenant, so a full queue still lets in tenants below their share.
    tenants: Arc<TenantLoad>,
    tokenizer: Arc<Tokenizer>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl EngineHandle {
    /// Starts the engine loop on its own OS thread.
    pub fn spawn(engine: Engine) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let cfg = engine.config().clone();
        let limits = EngineLimits {
            max_model_len: cfg.max_model_len,
            vocab_size: engine.model().config().vocab_size,
            max_waiting_requests: cfg.max_waiting_requests,
            hidden_size: engine.model().config().hidden_size,
            max_num_seqs: cfg.scheduler.max_num_seqs,
            block_size: cfg.block_size,
        };
        let stats = engine.stats.clone();
        let in_transit = engine.in_transit.clone();
        let tokenizer = engine.tokenizer().clone();
        let mut engine = engine;
        engine.publish_stats();
        stats.set_alive(true);
        let thread = std::thread::Builder::new()
            .name("indus-engine".into())
            .spawn(move || run_loop(engine, rx))?;
        Ok(Self {
            tx,
            next_key: Arc::new(AtomicU64::new(1)),
            limits,
            drain: Arc::new(DrainRate::new(stats.snapshot().finished)),
            tenants: Arc::default(),
            stats,
            in_transit,
            tokenizer,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        })
    }

    pub fn limits(&self) -> EngineLimits {
        self.limits
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub fn is_alive(&self) -> bool {
        self.stats.snapshot().alive
    }

    /// Sequences waiting to start: those the engine reports, and those on their way to it.
    pub fn num_waiting(&self) -> usize {
        self.stats.snapshot().waiting as usize + self.in_transit.load(Ordering::Relaxed)
    }

    /// Checks a request against the limits without submitting it.
    pub fn validate(&self, req: &Request) -> Result<(), EngineError> {
        self.limits.check(req)
    }

    /// Refuses `n` more sequences of `tenant` now if [`Self::submit`] would: a cheap check
    /// before the work of preparing a request (tokenizing), so a flood that would only get
    /// 429s does not hold the tokenizer pool from everyone else.
    pub fn check_room(&self, tenant: &Arc<str>, n: usize) -> Result<(), EngineError> {
        self.room_for(tenant, n, self.in_transit.load(Ordering::Relaxed))
    }

    /// Whether `n` sequences of `tenant` fit, with `in_transit` others on their way in.
    fn room_for(&self, tenant: &Arc<str>, n: usize, in_transit: usize) -> Result<(), EngineError> {
        let s = self.stats.snapshot();
        let free = self.limits.max_num_seqs.saturating_sub(s.running as usize);
        let ahead = in_transit + s.waiting as usize;
        let capacity = self
            .limits
            .max_num_seqs
            .saturating_add(self.limits.max_waiting_requests);
        if ahead + n > self.limits.max_waiting_requests.saturating_add(free)
            && !self.tenants.below_fair_share(tenant, capacity)
        {
            return Err(EngineError::QueueFull {
                waiting: ahead.saturating_sub(free),
                retry_after: self.drain.retry_after(
                    ahead + n,
                    self.limits.max_num_seqs,
                    s.finished,
                ),
            });
        }
        Ok(())
    }

    /// Submits a request; its outputs arrive on the returned stream.
    pub fn submit(&self, req: Request) -> Result<OutputStream, EngineError> {
        self.validate(&req)?;
        if !self.is_alive() {
            return Err(EngineError::NotRunning);
        }
        // Admission counts sequences, and only those that will truly wait: free running
        // slots take the first arrivals at once. A full queue still admits a tenant below
        // its fair share of the engine (see `tenant_load`), so one tenant's flood cannot
        // turn the others away.
        let n = req.params.n;
        let ahead = self.in_transit.fetch_add(n, Ordering::Relaxed);
        if let Err(e) = self.room_for(&req.tenant, n, ahead) {
            self.in_transit.fetch_sub(n, Ordering::Relaxed);
            return Err(e);
        }
        let slot = self.tenants.take(&req.tenant, n);
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx
            .send(Command::Add(Box::new(NewRequest {
                key,
                request: req,
                tx,
            })))
            .map_err(|_| {
                self.in_transit.fetch_sub(n, Ordering::Relaxed);
                EngineError::NotRunning
            })?;
        Ok(OutputStream {
            rx,
            key,
            abort: self.tx.clone(),
            done: false,
            n,
            _tenant: slot,
        })
    }

    /// Blocks until the engine thread has exited (after every handle is dropped).
    pub fn join(&self) {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn run_loop(mut engine: Engine, rx: crossbeam_channel::Receiver<Command>) {
    let stats = engine.stats.clone();
    loop {
        let iteration = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if !engine.has_work() {
                match rx.recv() {
                    Ok(cmd) => engine.handle_command(cmd),
                    Err(_) => return false,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                engine.handle_command(cmd);
            }
            engine.step();
            true
        }));
        match iteration {
            Ok(true) => {}
            Ok(false) => break,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(panic = %msg, "engine thread panicked; failing all requests");
                stats.set_alive(false);
                engine.fail_all("the engine crashed");
                return;
            }
        }
    }
    stats.set_alive(false);
}

/// The outputs of one request. Dropping it before the end aborts the request.
pub struct OutputStream {
    rx: mpsc::UnboundedReceiver<Result<RequestOutput, EngineError>>,
    key: u64,
    abort: crossbeam_channel::Sender<Command>,
    done: bool,
    n: usize,
    /// Counts this request's sequences against its tenant until the stream is dropped.
    _tenant: TenantSlot,
}

impl OutputStream {
    pub async fn next(&mut self) -> Option<Result<RequestOutput, EngineError>> {
        std::future::poll_fn(|cx| self.poll_next_item(cx)).await
    }

    fn poll_next_item(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<RequestOutput, EngineError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                if item.as_ref().map_or(true, RequestOutput::is_last) {
                    self.done = true;
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                // The engine dropped us without a final update: it died.
                self.done = true;
                Poll::Ready(Some(Err(EngineError::Internal(
                    "the engine stopped".into(),
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Aborts explicitly (the same as dropping the stream).
    pub fn abort(mut self) {
        self.send_abort();
    }

    fn send_abort(&mut self) {
        if !self.done {
            self.done = true;
            let _ = self.abort.send(Command::Abort(self.key));
        }
    }

    /// Collects every update into per-choice results.
    pub async fn collect(mut self) -> Result<CompletedRequest, EngineError> {
        let mut acc = Accumulator::new(self.n);
        while let Some(item) = self.next().await {
            acc.push(item?);
        }
        acc.finish()
    }

    /// [`Self::collect`] for callers outside an async runtime (CLI, tests).
    pub fn blocking_collect(mut self) -> Result<CompletedRequest, EngineError> {
        let mut acc = Accumulator::new(self.n);
        while !self.done {
            let item = match self.rx.blocking_recv() {
                Some(item) => item,
                None => {
                    self.done = true;
                    Err(EngineError::Internal("the engine stopped".into()))
                }
            };
            if item.as_ref().map_or(true, RequestOutput::is_last) {
                self.done = true;
            }
            acc.push(item?);
        }
        acc.finish()
    }
}

impl futures::Stream for OutputStream {
    type Item = Result<RequestOutput, EngineError>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.poll_next_item(cx)
    }
}

impl Drop for OutputStream {
    fn drop(&mut self) {
        self.send_abort();
    }
}

/// One finished choice.
#[derive(Debug, Clone, Default)]
pub struct CompletedChoice {
    pub token_ids: Vec<u32>,
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish_reason: Option<FinishReason>,
    pub stop_reason: Option<StopReason>,
}

/// A whole request's result, for non-streaming callers.
#[derive(Debug, Clone)]
pub struct CompletedRequest {
    pub request_id: String,
    pub choices: Vec<CompletedChoice>,
    pub num_prompt_tokens: usize,
    pub num_cached_tokens: usize,
    pub times: Option<RequestTimes>,
    /// An embedding request's hidden state (see `RequestOutput::embedding`).
    pub embedding: Option<Vec<f32>>,
}

impl CompletedRequest {
    pub fn num_generated_tokens(&self) -> usize {
        self.choices.iter().map(|c| c.token_ids.len()).sum()
    }
}

struct Accumulator {
    out: CompletedRequest,
}

impl Accumulator {
    fn new(n: usize) -> Self {
        Self {
            out: CompletedRequest {
                request_id: String::new(),
                choices: vec![CompletedChoice::default(); n],
                num_prompt_tokens: 0,
                num_cached_tokens: 0,
                times: None,
                embedding: None,
            },
        }
    }

    fn push(&mut self, o: RequestOutput) {
        self.out.request_id = o.request_id;
        self.out.num_prompt_tokens = o.num_prompt_tokens;
        self.out.num_cached_tokens = o.num_cached_tokens;
        if let Some(c) = self.out.choices.get_mut(o.index) {
            c.token_ids.extend(o.token_ids);
            c.text.push_str(&o.text);
            c.logprobs.extend(o.logprobs);
            if o.finish_reason.is_some() {
                c.finish_reason = o.finish_reason;
                c.stop_reason = o.stop_reason;
            }
        }
        if o.times.is_some() {
            self.out.times = o.times;
        }
        if o.embedding.is_some() {
            self.out.embedding = o.embedding;
        }
    }

    fn finish(self) -> Result<CompletedRequest, EngineError> {
        Ok(self.out)
    }
}
