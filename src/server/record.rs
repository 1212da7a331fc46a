//! One API request's bookkeeping: tokens, finish reason, status and latency, written to the
//! metrics and the audit log exactly once — when the request ends, or when it is dropped
//! (a client that went away mid-stream is recorded as status 499, finish reason `abort`).
//! It also charges the caller's quota: the prompt when it is admitted, the rest when the
//! request ends, however it ends.

use super::audit::{AuditRecord, rfc3339};
use super::auth::Caller;
use super::error::ApiError;
use super::state::AppState;
use crate::engine::{FinishReason, RequestTimes};
use axum::http::HeaderMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// HTTP status recorded for a client that disconnected before the response ended.
pub const CLIENT_CLOSED: u16 = 499;

pub struct RequestRecord {
    state: Arc<AppState>,
    pub id: String,
    endpoint: &'static str,
    caller: Caller,
    forwarded_for: Option<String>,
    pub user: Option<String>,
    pub model: Option<String>,
    pub stream: bool,
    started: Instant,
    started_wall: SystemTime,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
    /// Per-choice finish reasons seen so far.
    finish: Vec<FinishReason>,
    status: Option<u16>,
    /// Prompt and completions, only when the audit log records content.
    pub prompt_content: Option<serde_json::Value>,
    completions: Vec<String>,
    /// Prompt tokens already charged to the key's quota at admission.
    charged_prompt: usize,
    done: bool,
}

impl RequestRecord {
    pub fn new(
        state: &Arc<AppState>,
        endpoint: &'static str,
        id: String,
        caller: Caller,
        headers: &HeaderMap,
    ) -> Self {
        let forwarded_for = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|s| super::audit::capped(s).to_string());
        state.drain.begin();
        Self {
            state: state.clone(),
            id,
            endpoint,
            caller,
            forwarded_for,
            user: None,
            model: None,
            stream: false,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cached_tokens: 0,
            finish: Vec::new(),
            status: None,
            prompt_content: None,
            completions: Vec::new(),
            charged_prompt: 0,
            done: false,
        }
    }

    /// The server's drain, whose cut signal ends this request at the shutdown timeout.
    pub fn drain(&self) -> &super::drain::Drain {
        &self.state.drain
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Whether prompt and completion text should be kept for the audit log.
    pub fn wants_content(&self) -> bool {
        self.state.audit.as_ref().is_some_and(|a| a.content)
    }

    /// Accounts generated tokens and text of choice `slot` (numbered over all prompts).
    pub fn add_completion(
        &mut self,
        slot: usize,
        num_tokens: usize,
        text: &str,
        finish: Option<FinishReason>,
    ) {
        self.completion_tokens += num_tokens;
        if self.wants_content() {
            if self.completions.len() <= slot {
                self.completions.resize(slot + 1, String::new());
            }
            self.completions[slot].push_str(text);
        }
        if let Some(f) = finish {
            self.finish.push(f);
        }
    }

    /// 429 when the key's daily budget cannot pay for a prompt of `tokens` tokens.
    pub fn check_prompt_quota(&self, tokens: usize) -> Result<(), ApiError> {
        let Some(q) = &self.caller.quota else {
            return Ok(());
        };
        q.check_prompt(self.state.quotas.now(), tokens as u64)
            .map_err(|r| {
                self.state
                    .metrics
                    .count_quota_rejection(q.name(), r.reason());
                ApiError::Quota(r)
            })
    }

    /// Charges an admitted prompt to the key's quota now, so that requests admitted
    /// meanwhile see it (the completion is charged when the request ends).
    pub fn charge_prompt(&mut self, tokens: usize) {
        if let Some(q) = &self.caller.quota {
            q.charge(self.state.quotas.now(), tokens as u64);
        }
        self.charged_prompt += tokens;
    }

    /// Accounts one engine request's prompt (once per prompt, whatever n is).
    pub fn add_prompt(&mut self, num_prompt_tokens: usize, num_cached_tokens: usize) {
        self.prompt_tokens += num_prompt_tokens;
        self.cached_tokens += num_cached_tokens;
    }

    /// Records the latency metrics of one finished engine request whose longest choice
    /// generated `max_generated` tokens.
    pub fn observe(&self, times: Option<&RequestTimes>, max_generated: usize) {
        if let Some(t) = times {
            self.state.metrics.observe_times(t, max_generated);
        }
    }

    /// The request ended with an error response.
    pub fn fail(mut self, e: &ApiError) {
        self.status = Some(e.status().as_u16());
        self.finish.clear();
        self.finish_now();
    }

    /// The response was fully produced.
    pub fn succeed(mut self) {
        self.status = Some(200);
        self.finish_now();
    }

    /// The request's finish reason: `length` if any choice ran out of tokens, else `stop`.
    fn finish_reason(&self) -> &'static str {
        match self.status {
            Some(200) => {
                if self.finish.contains(&FinishReason::Abort) {
                    "abort"
                } else if self.finish.contains(&FinishReason::Length) {
                    "length"
                } else {
                    "stop"
                }
            }
            Some(CLIENT_CLOSED) => "abort",
            _ => "error",
        }
    }

    fn finish_now(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let status = *self.status.get_or_insert(CLIENT_CLOSED);
        let finish_reason = self.finish_reason();
        let latency = self.started.elapsed();
        let m = &self.state.metrics;
        m.count_request(finish_reason, &status.to_string());
        m.count_tokens(
            &self.caller.key_name,
            self.prompt_tokens,
            self.completion_tokens,
        );
        if let Some(q) = &self.caller.quota {
            let rest =
                self.completion_tokens + self.prompt_tokens.saturating_sub(self.charged_prompt);
            q.charge(self.state.quotas.now(), rest as u64);
        }
        tracing::info!(
            request_id = %self.id,
            endpoint = self.endpoint,
            key = %self.caller.key_name,
            model = self.model.as_deref().unwrap_or(""),
            status,
            finish_reason,
            prompt_tokens = self.prompt_tokens,
            completion_tokens = self.completion_tokens,
            latency_ms = latency.as_secs_f64() * 1e3,
            "request done"
        );
        if let Some(audit) = &self.state.audit {
            let content = audit.content;
            audit.write(&AuditRecord {
                time: rfc3339(self.started_wall),
                request_id: &self.id,
                endpoint: self.endpoint,
                key_name: Some(&self.caller.key_name),
                model: self.model.as_deref(),
                client_addr: self.caller.client_addr.map(|a| a.to_string()),
                forwarded_for: self.forwarded_for.as_deref(),
                user: self.user.as_deref().map(super::audit::capped),
                stream: self.stream,
                prompt_tokens: self.prompt_tokens,
                completion_tokens: self.completion_tokens,
                cached_tokens: self.cached_tokens,
                finish_reason,
                status,
                latency_ms: (latency.as_secs_f64() * 1e6).round() / 1e3,
                prompt: self.prompt_content.as_ref().filter(|_| content),
                completion: Some(self.completions.as_slice()).filter(|_| content),
            });
        }
        // Last, so the audit line is written before a drain that waits on it can end.
        self.state.drain.end();
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.finish_now();
    }
}
