//! What the engine sends back, one update per choice per step.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// max_tokens or the model's context length.
    Length,
    /// The client went away or the request was cancelled.
    Abort,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// The chosen token's logprob and the top alternatives, from the model's raw distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token_id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Timestamps of a request's life, for TTFT/TPOT/queue-time metrics and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimes {
    pub arrival: Instant,
    pub first_scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
    pub finished: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct RequestOutput {
    pub request_id: String,
    /// The choice (0..n) this update belongs to.
    pub index: usize,
    /// Tokens generated since the last update of this choice.
    pub token_ids: Vec<u32>,
    /// Text since the last update; always valid UTF-8, never a split character.
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish_reason: Option<FinishReason>,
    /// The stop string or token that ended the choice, if any.
    pub stop_reason: Option<StopReason>,
    pub num_prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub num_cached_tokens: usize,
    /// Tokens generated so far by this choice.
    pub num_generated_tokens: usize,
    /// Set on the last update of the whole request (all choices finished).
    pub times: Option<RequestTimes>,
    /// An embedding request's output: the final hidden state of the prompt's last token
    /// (f32, not normalized).
    pub embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    Token(u32),
    String(String),
}

impl RequestOutput {
    pub fn is_last(&self) -> bool {
        self.times.is_some()
    }
}
