//! What the engine is asked to do: token ids and sampling parameters. The HTTP layer
//! translates its wire types into these; the engine never sees JSON.

use std::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Independent choices sharing the prompt's KV blocks.
    pub n: usize,
    pub max_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// Multiplicative, over prompt and output tokens (1 = off), as in transformers/vLLM.
    pub repetition_penalty: f32,
    /// Additive, over output tokens (OpenAI semantics).
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Per-request seed: the same seed gives the same tokens, whatever else is batched.
    pub seed: Option<u64>,
    /// Strings that end generation; not included in the output.
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    /// Return the chosen token's logprob and this many top alternatives.
    pub logprobs: Option<usize>,
    pub skip_special_tokens: bool,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            max_tokens: 16,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            skip_special_tokens: true,
        }
    }
}

/// Most alternatives a request may ask logprobs for (OpenAI allows 20).
pub const MAX_LOGPROBS: usize = 20;

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < 1e-5
    }

    /// Checks ranges; the message names the offending parameter first.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let fail = |param: &'static str, msg: String| Err((param, msg));
        if self.n == 0 || self.n > 128 {
            return fail("n", format!("n must be between 1 and 128, got {}", self.n));
        }
        if self.max_tokens == 0 {
            return fail("max_tokens", "max_tokens must be at least 1".into());
        }
        if !(0.0..=2.0).contains(&self.temperature) || self.temperature.is_nan() {
            return fail(
                "temperature",
                format!("temperature must be in [0, 2], got {}", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return fail(
                "top_p",
                format!("top_p must be in (0, 1], got {}", self.top_p),
            );
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return fail(
                "min_p",
                format!("min_p must be in [0, 1], got {}", self.min_p),
            );
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty <= 2.0) {
            return fail(
                "repetition_penalty",
                format!(
                    "repetition_penalty must be in (0, 2], got {}",
                    self.repetition_penalty
                ),
            );
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return fail(
                "presence_penalty",
                format!(
                    "presence_penalty must be in [-2, 2], got {}",
                    self.presence_penalty
                ),
            );
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return fail(
                "frequency_penalty",
                format!(
                    "frequency_penalty must be in [-2, 2], got {}",
                    self.frequency_penalty
                ),
            );
        }
        if self.logprobs.is_some_and(|k| k > MAX_LOGPROBS) {
            return fail(
                "logprobs",
                format!("at most {MAX_LOGPROBS} logprobs may be requested"),
            );
        }
        if self.stop.iter().any(String::is_empty) {
            return fail("stop", "stop strings must not be empty".into());
        }
        Ok(())
    }
}

/// One generation request as the engine takes it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Caller's id, echoed in outputs and logs (never the prompt).
    pub id: String,
    pub prompt_token_ids: Vec<u32>,
    pub params: SamplingParams,
    /// Lower is served first; ties in arrival order.
    pub priority: i32,
    /// Whose request this is — an opaque name (the server passes the API key's name):
    /// waiting requests are served round-robin across tenants.
    pub tenant: std::sync::Arc<str>,
    pub arrival: Instant,
    /// An embedding request: the prompt is computed (prefill only) and the final hidden
    /// state of its last token is the output; nothing is sampled.
    pub embed: bool,
    /// Structured output: every choice's tokens must keep to this grammar (compiled by the
    /// caller, off the engine thread; each choice walks its own matcher).
    pub guided: Option<std::sync::Arc<crate::guided::CompiledGrammar>>,
}

impl Request {
    pub fn new(id: impl Into<String>, prompt_token_ids: Vec<u32>, params: SamplingParams) -> Self {
        Self {
            id: id.into(),
            prompt_token_ids,
            params,
            priority: 0,
            tenant: std::sync::Arc::from(""),
            arrival: Instant::now(),
            embed: false,
            guided: None,
        }
    }
}
