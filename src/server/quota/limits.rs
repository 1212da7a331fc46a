//! What a key may use (the keys file's optional quota fields) and why a request was refused.

use std::time::Duration;

/// A key's limits; each one absent is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests started per minute (a token bucket: bursts up to the limit).
    pub requests_per_minute: Option<u64>,
    /// Prompt + completion tokens per minute (a token bucket that a request may overdraw).
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once (a stream counts until it ends).
    pub max_concurrent_requests: Option<u64>,
    /// Prompt + completion tokens per UTC day, kept across restarts under `--state-dir`.
    pub daily_token_budget: Option<u64>,
}

impl KeyLimits {
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }

    /// Zero would refuse everything; a key that must not be used should be removed instead.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("max_concurrent_requests", self.max_concurrent_requests),
            ("daily_token_budget", self.daily_token_budget),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{name} must be at least 1 (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }
}

/// Which limit refused a request, for the 429's message, `Retry-After` and the metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "rate limit reached for requests per minute: limit {limit}; try again in {}",
        human(*retry_after)
    )]
    Requests { limit: u64, retry_after: Duration },
    #[error(
        "rate limit reached for tokens per minute: limit {limit}; try again in {}",
        human(*retry_after)
    )]
    Tokens { limit: u64, retry_after: Duration },
    #[error(
        "too many concurrent requests: limit {limit}; retry once one of this key's requests has finished"
    )]
    Concurrency { limit: u64 },
    #[error(
        "daily token budget exhausted: {used} of {budget} tokens used today (UTC){}; it resets in {}",
        needed.map(|n| format!(", this request needs {n} more")).unwrap_or_default(),
        human(*retry_after)
    )]
    DailyBudget {
        budget: u64,
        used: u64,
        needed: Option<u64>,
        retry_after: Duration,
    },
}

impl Refusal {
    /// The metric label: the keys-file field that refused.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Requests { .. } => "requests_per_minute",
            Self::Tokens { .. } => "tokens_per_minute",
            Self::Concurrency { .. } => "max_concurrent_requests",
            Self::DailyBudget { .. } => "daily_token_budget",
        }
    }

    /// OpenAI's error type (and code): a rate limit that passes, or a quota that is spent.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DailyBudget { .. } => "insufficient_quota",
            _ => "rate_limit_exceeded",
        }
    }

    /// Whole seconds for `Retry-After`; `None` when there is no estimate (concurrency).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Requests { retry_after, .. }
            | Self::Tokens { retry_after, .. }
            | Self::DailyBudget { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            Self::Concurrency { .. } => None,
        }
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*` and messages: `250ms`, `1.5s`,
/// `6m0s`, `3h20m5s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let s = format!("{:.3}", d.as_secs_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return format!("{s}s");
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openai() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(1)), "1s");
        assert_eq!(human(Duration::from_secs(360)), "6m0s");
        assert_eq!(human(Duration::from_secs(12_005)), "3h20m5s");
    }

    #[test]
    fn zero_limits_are_refused() {
        let l = KeyLimits {
            tokens_per_minute: Some(0),
            ..Default::default()
        };
        assert!(l.validate().unwrap_err().contains("tokens_per_minute"));
        assert!(KeyLimits::default().is_unlimited());
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = Refusal::Tokens {
            limit: 10,
            retry_after: Duration::from_millis(1200),
        };
        assert_eq!(r.retry_after_secs(), Some(2));
        assert_eq!(r.kind(), "rate_limit_exceeded");
        assert_eq!(Refusal::Concurrency { limit: 1 }.retry_after_secs(), None);
    }
}
