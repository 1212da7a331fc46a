//! The engine loop: take commands, schedule, run the model, sample, detokenize, send.

use super::detokenizer::{IncrementalDetokenizer, StopChecker};
use super::handle::{Command, EngineError, NewRequest, OutputSender};
use super::output::{FinishReason, RequestOutput, RequestTimes, StopReason, TokenLogprob};
use super::request::SamplingParams;
use super::runner::{StepBatch, execute};
use super::sampler::{History, choice_rng, sample};
use super::stats::{EngineStats, StatsUpdate};
use crate::guided::{Matcher, TokenMask};
use crate::kv::{KvCacheManager, SeqId};
use crate::scheduler::{Scheduler, SchedulerConfig, Sequence};
use crate::tokenizer::Tokenizer;
use indus_models::{CausalLm, KvCache};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub block_size: usize,
    pub num_blocks: usize,
    /// Longest prompt + output a request may have.
    pub max_model_len: usize,
    pub scheduler: SchedulerConfig,
    pub enable_prefix_caching: bool,
    /// Sequences waiting to start beyond which submissions are refused (429); sequences
    /// that free running slots can take at once do not count.
    pub max_waiting_requests: usize,
    /// Seed of the RNG that seeds unseeded requests.
    pub seed: u64,
    /// Fault injection: panic in the engine thread at this step (from the environment
    /// variable `INDUS_FAULT_PANIC_AT_STEP`), so tests can prove a crash fails every
    /// in-flight request and the server exits non-zero. Never set in production.
    pub fault_panic_at_step: Option<u64>,
    /// Threads that compute grammar masks while the forward pass runs (0: one per core, at
    /// most 8). Started on the first guided request.
    pub guided_threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: 1024,
            max_model_len: 2048,
            scheduler: SchedulerConfig::default(),
            enable_prefix_caching: true,
            max_waiting_requests: usize::MAX,
            seed: 0,
            fault_panic_at_step: None,
            guided_threads: 0,
        }
    }
}

struct RequestState {
    id: String,
    params: Arc<SamplingParams>,
    tx: OutputSender,
    prompt_len: usize,
    num_cached_tokens: usize,
    times: RequestTimes,
    unfinished: usize,
    /// Choices 1..n, waiting for choice 0's prompt to be computed so they can share it.
    pending_forks: Vec<Sequence>,
    /// Prefill only; the output is the last token's hidden state.
    embed: bool,
}

struct ChoiceState {
    request: u64,
    index: usize,
    rng: ChaCha8Rng,
    detok: IncrementalDetokenizer,
    stop: StopChecker,
    num_generated: usize,
    /// Where this choice is in its request's grammar; advanced only by sampled tokens, so a
    /// preempted and recomputed sequence keeps its place.
    matcher: Option<Matcher>,
}

/// The state one engine thread owns.
pub struct Engine {
    model: CausalLm,
    cache: KvCache,
    tokenizer: Arc<Tokenizer>,
    kv: KvCacheManager,
    scheduler: Scheduler,
    config: EngineConfig,
    requests: HashMap<u64, RequestState>,
    choices: HashMap<SeqId, ChoiceState>,
    next_seq: SeqId,
    next_arrival: u64,
    rng: ChaCha8Rng,
    pub(super) stats: Arc<EngineStats>,
    /// Sequences submitted through the handle and not yet in the published `waiting` and
    /// `running` gauges (the handle adds, [`Self::publish_stats`] subtracts).
    pub(super) in_transit: Arc<AtomicUsize>,
    /// Sequences added since the gauges were last published.
    added_since_publish: usize,
    /// Where grammar masks are computed; None until a step needs one, or if it could not be
    /// started (masks are then computed on the engine thread).
    mask_pool: Option<rayon::ThreadPool>,
}

/// One choice's update, gathered during a step and sent after.
struct Update {
    seq: SeqId,
    token: Option<u32>,
    logprob: Option<TokenLogprob>,
    text: String,
    finish: Option<(FinishReason, Option<StopReason>)>,
    embedding: Option<Vec<f32>>,
}

impl Engine {
    pub fn new(
        model: CausalLm,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
    ) -> Result<Self, indus_models::ModelError> {
        let cache = model.new_kv_cache(config.num_blocks, config.block_size)?;
        let kv = KvCacheManager::new(
            config.num_blocks,
            config.block_size,
            config.enable_prefix_caching,
        );
        Ok(Self {
            model,
            cache,
            tokenizer,
            kv,
            scheduler: Scheduler::new(config.scheduler.clone()),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            requests: HashMap::new(),
            choices: HashMap::new(),
            next_seq: 0,
            next_arrival: 0,
            stats: Arc::new(EngineStats::default()),
            in_transit: Arc::new(AtomicUsize::new(0)),
            added_since_publish: 0,
            mask_pool: None,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Free KV blocks now (for tests of exact accounting).
    pub fn num_free_blocks(&self) -> usize {
        self.kv.num_free_blocks()
    }

    pub fn has_work(&self) -> bool {
        self.scheduler.has_work() || !self.requests.is_empty()
    }

    pub(super) fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Add(req) => self.add_request(*req),
            Command::Abort(key) => self.abort_request(key, None),
        }
    }

    fn new_seq(&mut self, prompt: Vec<u32>, priority: i32) -> Sequence {
        let s = Sequence::new(self.next_seq, prompt, priority, self.next_arrival);
        self.next_seq += 1;
        s
    }

    fn add_request(&mut self, new: NewRequest) {
        let NewRequest { key, request, tx } = new;
        let params = Arc::new(request.params);
        let prompt_len = request.prompt_token_ids.len();
        let mut pending = Vec::new();
        for index in 0..params.n {
            let seq = self
                .new_seq(request.prompt_token_ids.clone(), request.priority)
                .with_tenant(request.tenant.clone());
            self.choices.insert(
                seq.id,
                ChoiceState {
                    request: key,
                    index,
                    rng: choice_rng(params.seed, index, &mut self.rng),
                    detok: IncrementalDetokenizer::new(prompt_len, params.skip_special_tokens),
                    stop: StopChecker::new(params.stop.clone()),
                    num_generated: 0,
                    matcher: request.guided.as_ref().map(|g| g.matcher()),
                },
            );
            // Choice 0 computes the prompt; the others wait to fork its blocks.
            if index == 0 {
                self.scheduler.add(seq);
            } else {
                pending.push(seq);
            }
        }
        self.next_arrival += 1;
        self.added_since_publish += params.n;
        self.requests.insert(
            key,
            RequestState {
                id: request.id,
                params: params.clone(),
                tx,
                prompt_len,
                num_cached_tokens: 0,
                times: RequestTimes {
                    arrival: request.arrival,
                    first_scheduled: None,
                    first_token: None,
                    finished: None,
                },
                unfinished: params.n,
                pending_forks: pending,
                embed: request.embed,
            },
        );
    }

    fn seqs_of(&self, key: u64) -> Vec<SeqId> {
        self.choices
            .iter()
            .filter(|(_, c)| c.request == key)
            .map(|(&s, _)| s)
            .collect()
    }

    /// Ends a request early: frees every block it holds; sends `error` if given, else a
    /// final `abort` update (the client may be gone; then the send just fails).
    fn abort_request(&mut self, key: u64, error: Option<EngineError>) {
        let Some(mut req) = self.requests.remove(&key) else {
            return;
        };
        for seq in self.seqs_of(key) {
            self.scheduler.remove(seq, &mut self.kv);
            self.choices.remove(&seq);
        }
        req.times.finished = Some(Instant::now());
        let msg = match error {
            Some(e) => Err(e),
            None => Ok(RequestOutput {
                request_id: req.id.clone(),
                index: 0,
                token_ids: Vec::new(),
                text: String::new(),
                logprobs: Vec::new(),
                finish_reason: Some(FinishReason::Abort),
                stop_reason: None,
                num_prompt_tokens: req.prompt_len,
                num_cached_tokens: req.num_cached_tokens,
                num_generated_tokens: 0,
                times: Some(req.times),
                embedding: None,
            }),
        };
        let _ = req.tx.send(msg);
    }

    /// Fails every live request (the engine cannot go on).
    pub(super) fn fail_all(&mut self, message: &str) {
        let keys: Vec<u64> = self.requests.keys().copied().collect();
        for key in keys {
            self.abort_request(key, Some(EngineError::Internal(message.to_string())));
        }
    }

    /// Publishes the gauges; sequences added since the last time move from "in transit" to
    /// them (counted twice for a moment rather than not at all, so admission never
    /// over-admits).
    pub(super) fn publish_stats(&mut self) {
        let pending_forks: usize = self.requests.values().map(|r| r.pending_forks.len()).sum();
        self.stats.publish(StatsUpdate {
            running: self.scheduler.num_running(),
            waiting: self.scheduler.num_waiting() + pending_forks,
            free_blocks: self.kv.num_free_blocks(),
            total_blocks: self.kv.num_total_blocks(),
            prefix: self.kv.prefix_cache_stats(),
            preemptions: self.scheduler.num_preemptions(),
        });
        let added = std::mem::take(&mut self.added_since_publish);
        if added > 0 {
            self.in_transit.fetch_sub(added, Ordering::Relaxed);
        }
    }

    /// One engine step. Returns whether anything ran.
    pub fn step(&mut self) -> bool {
        let out = self.scheduler.schedule(&mut self.kv);
        if out.is_empty() {
            self.publish_stats();
            return false;
        }
        let now = Instant::now();
        for s in &out.seqs {
            let Some(key) = self.choices.get(&s.id).map(|c| c.request) else {
                continue;
            };
            if let Some(req) = self.requests.get_mut(&key)
                && req.times.first_scheduled.is_none()
            {
                req.times.first_scheduled = Some(now);
                req.num_cached_tokens = s.num_computed;
            }
        }
        let is_embed = |id: SeqId| {
            self.choices
                .get(&id)
                .and_then(|c| self.requests.get(&c.request))
                .is_some_and(|r| r.embed)
        };
        let batch = StepBatch::build(&out, &self.scheduler, &self.kv, &is_embed);
        let embed_seqs: Vec<bool> = batch.embeds.clone();
        // The grammars' masks for this step's samples are computed on another thread while
        // the forward pass runs: they depend only on the tokens already sampled.
        let guided: Vec<(SeqId, &mut Matcher)> = {
            let samples: std::collections::HashSet<SeqId> = out
                .seqs
                .iter()
                .filter(|s| s.samples)
                .map(|s| s.id)
                .collect();
            self.choices
                .iter_mut()
                .filter(|(id, _)| samples.contains(id))
                .filter_map(|(id, c)| c.matcher.as_mut().map(|m| (*id, m)))
                .collect()
        };
        if !guided.is_empty() && self.mask_pool.is_none() {
            self.mask_pool = start_mask_pool(self.config.guided_threads);
        }
        let pool = self.mask_pool.as_ref().filter(|_| !guided.is_empty());
        let (rows, mut masks) = std::thread::scope(|scope| {
            let masks = pool.map(|pool| {
                scope.spawn(move || {
                    pool.install(|| {
                        guided
                            .into_par_iter()
                            .map(|(id, m)| (id, allowed_next(m)))
                            .collect::<HashMap<_, _>>()
                    })
                })
            });
            let rows = execute(&self.model, &self.cache, batch);
            let masks = masks
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default();
            (rows, masks)
        });
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "forward pass failed; failing the step's requests");
                let keys: Vec<u64> = out
                    .seqs
                    .iter()
                    .filter_map(|s| self.choices.get(&s.id).map(|c| c.request))
                    .collect();
                for key in keys {
                    self.abort_request(key, Some(EngineError::Internal(e.to_string())));
                }
                self.publish_stats();
                return true;
            }
        };
        self.scheduler.step_done(&out);
        let step = self.stats.count_step();
        if self.config.fault_panic_at_step == Some(step) {
            panic!("fault injection: INDUS_FAULT_PANIC_AT_STEP={step}");
        }

        let sampled: Vec<SeqId> = out
            .seqs
            .iter()
            .filter(|s| s.samples)
            .map(|s| s.id)
            .collect();
        let mut updates = Vec::with_capacity(sampled.len());
        let mut failed = Vec::new();
        let mut logits = rows.logits.into_iter();
        let mut hidden = rows.hidden.into_iter();
        for (seq, embed) in sampled.into_iter().zip(embed_seqs) {
            if embed {
                updates.extend(hidden.next().and_then(|h| self.finish_embedding(seq, h)));
            } else if let Some(mut row) = logits.next() {
                match self.sample_one(seq, &mut row, masks.remove(&seq)) {
                    Ok(update) => updates.extend(update),
                    Err(failure) => failed.push(failure),
                }
            }
        }
        self.fork_pending_choices(&out);
        self.deliver(updates);
        for (key, error) in failed {
            self.abort_request(key, Some(error));
        }
        self.publish_stats();
        true
    }

    /// An embedding request's prompt is computed: its output is the hidden state.
    fn finish_embedding(&mut self, seq_id: SeqId, hidden: Vec<f32>) -> Option<Update> {
        let choice = self.choices.get(&seq_id)?;
        let req = self.requests.get_mut(&choice.request)?;
        if req.times.first_token.is_none() {
            req.times.first_token = Some(Instant::now());
        }
        Some(Update {
            seq: seq_id,
            token: None,
            logprob: None,
            text: String::new(),
            finish: Some((FinishReason::Stop, None)),
            embedding: Some(hidden),
        })
    }

    /// Samples one choice's next token, from `mask` when its grammar computed one. `Err`
    /// carries the request to fail: its grammar could not go on (llguidance's error, which
    /// names the cause).
    fn sample_one(
        &mut self,
        seq_id: SeqId,
        row: &mut [f32],
        mask: Option<Result<TokenMask, String>>,
    ) -> Result<Option<Update>, (u64, EngineError)> {
        let Some(choice) = self.choices.get_mut(&seq_id) else {
            return Ok(None);
        };
        let key = choice.request;
        let guided_failure = |e: String| {
            (
                key,
                EngineError::Internal(format!("structured output: {e}")),
            )
        };
        let (Some(req), Some(seq)) = (self.requests.get_mut(&key), self.scheduler.get(seq_id))
        else {
            return Ok(None);
        };
        let mask = match (choice.matcher.as_mut(), mask) {
            (Some(_), Some(mask)) => Some(mask.map_err(guided_failure)?),
            // A mask thread that died leaves the choice's mask to be computed here.
            (Some(m), None) => Some(allowed_next(m).map_err(guided_failure)?),
            (None, _) => None,
        };
        let params = &req.params;
        let (token, logprob) = sample(
            row,
            params,
            &History {
                prompt: &seq.tokens[..seq.num_prompt_tokens],
                output: &seq.tokens[seq.num_prompt_tokens..],
            },
            mask.as_ref(),
            &mut choice.rng,
        );
        if req.times.first_token.is_none() {
            req.times.first_token = Some(Instant::now());
        }
        let is_eos = self.tokenizer.eos_token_ids().contains(&token);
        // A grammar ends where EOS is all it allows (a closed JSON value): the last token's
        // text is output, and the choice stops as if the model had written EOS.
        let mut grammar_done = false;
        if let Some(m) = choice.matcher.as_mut()
            && !is_eos
        {
            m.consume_token(token)
                .map_err(|e| guided_failure(e.to_string()))?;
            grammar_done = m.is_stopped();
        }
        self.scheduler.append_token(seq_id, token);
        choice.num_generated += 1;
        let Some(seq) = self.scheduler.get(seq_id) else {
            return Ok(None);
        };
        // Under a grammar, EOS is sampled only where the grammar allows the output to end,
        // so it ends the choice even with ignore_eos (nothing else could follow it).
        let is_stop_token = params.stop_token_ids.contains(&token)
            || (is_eos && (!params.ignore_eos || choice.matcher.is_some()));
        let at_length = choice.num_generated >= params.max_tokens
            || seq.tokens.len() >= self.config.max_model_len;
        let mut finish = None;
        let decoded = if is_stop_token {
            finish = Some((FinishReason::Stop, Some(StopReason::Token(token))));
            // The stop token's own text is not part of the output.
            choice
                .detok
                .step(&self.tokenizer, &seq.tokens[..seq.tokens.len() - 1], true)
        } else {
            if grammar_done {
                finish = Some((FinishReason::Stop, None));
            }
            choice
                .detok
                .step(&self.tokenizer, &seq.tokens, at_length || grammar_done)
        };
        let delta = decoded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "detokenization failed for one token");
            String::new()
        });
        if let Some(s) = choice.stop.push(&delta) {
            finish = Some((FinishReason::Stop, Some(StopReason::String(s))));
        } else if finish.is_none() && at_length {
            finish = Some((FinishReason::Length, None));
        }
        let text = choice.stop.take_sendable(finish.is_some());
        Ok(Some(Update {
            seq: seq_id,
            token: Some(token),
            logprob,
            text,
            finish,
            embedding: None,
        }))
    }

    /// Once choice 0 of an n > 1 request has its prompt in the cache, the other choices
    /// start from the same blocks (whole blocks shared; the tail block recomputed by each).
    fn fork_pending_choices(&mut self, out: &crate::scheduler::SchedulerOutput) {
        for s in out.seqs.iter().filter(|s| s.samples) {
            let Some(key) = self.choices.get(&s.id).map(|c| c.request) else {
                continue;
            };
            let Some(req) = self.requests.get_mut(&key) else {
                continue;
            };
            if req.pending_forks.is_empty() {
                continue;
            }
            let bs = self.kv.block_size();
            let shared = (req.prompt_len.saturating_sub(1) / bs) * bs;
            for mut child in std::mem::take(&mut req.pending_forks) {
                self.kv.fork(s.id, child.id, shared);
                child.num_computed = shared;
                self.scheduler.add(child);
            }
        }
    }

    fn deliver(&mut self, updates: Vec<Update>) {
        for u in updates {
            let Some(choice) = self.choices.get(&u.seq) else {
                continue;
            };
            let key = choice.request;
            let index = choice.index;
            let num_generated = choice.num_generated;
            let Some(req) = self.requests.get_mut(&key) else {
                continue;
            };
            let finished = u.finish.is_some();
            if finished {
                req.unfinished -= 1;
                self.stats.count_finished();
            }
            let last = finished && req.unfinished == 0;
            if last {
                req.times.finished = Some(Instant::now());
            }
            let (finish_reason, stop_reason) = match u.finish {
                Some((f, s)) => (Some(f), s),
                None => (None, None),
            };
            let msg = RequestOutput {
                request_id: req.id.clone(),
                index,
                token_ids: u.token.into_iter().collect(),
                text: u.text,
                logprobs: u.logprob.into_iter().collect(),
                finish_reason,
                stop_reason,
                num_prompt_tokens: req.prompt_len,
                num_cached_tokens: req.num_cached_tokens,
                num_generated_tokens: num_generated,
                times: if last { Some(req.times) } else { None },
                embedding: u.embedding,
            };
            let client_gone = req.tx.send(Ok(msg)).is_err();
            if finished {
                self.scheduler.remove(u.seq, &mut self.kv);
                self.choices.remove(&u.seq);
            }
            if last {
                self.requests.remove(&key);
            } else if client_gone {
                self.abort_request(key, None);
            }
        }
    }
}

/// The mask workers: `threads` of them (0: one per core, at most 8).
fn start_mask_pool(threads: usize) -> Option<rayon::ThreadPool> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("indus-mask-{i}"))
        .build()
        .map_err(|e| tracing::warn!(error = %e, "no grammar mask pool; masks computed inline"))
        .ok()
}

/// The tokens a grammar allows next (just EOS once it is complete); an empty set is an error,
/// as sampling from it would pick an arbitrary token.
fn allowed_next(m: &mut Matcher) -> Result<TokenMask, String> {
    let mask = m.compute_mask_or_eos().map_err(|e| e.to_string())?;
    if mask.num_set() == 0 {
        return Err("the grammar allows no next token".into());
    }
    Ok(mask)
}
