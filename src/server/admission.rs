//! Admission checks that run before a request costs anything: how many sequences it asks
//! for (prompts × n), and whether its text could possibly fit the context — judged by byte
//! length, so a multi-megabyte prompt is refused without being tokenized.

use super::error::ApiError;

/// Per-request caps (`--max-prompts-per-request`, `--max-n`, and `--max-num-seqs` for
/// prompts × n: a request needing more sequences than the engine runs at once would hold
/// the queue for everyone).
#[derive(Debug, Clone, Copy)]
pub struct RequestCaps {
    pub max_prompts: usize,
    pub max_n: usize,
    pub max_seqs: usize,
}

impl Default for RequestCaps {
    fn default() -> Self {
        Self {
            max_prompts: 128,
            max_n: 128,
            max_seqs: 256,
        }
    }
}

impl RequestCaps {
    /// 400 when a request of `prompts` prompts with `n` choices each asks for too much.
    pub fn check(&self, prompts: usize, n: usize) -> Result<(), ApiError> {
        if prompts > self.max_prompts {
            return Err(ApiError::bad(
                "prompt",
                format!(
                    "at most {} prompts per request (--max-prompts-per-request), got {prompts}",
                    self.max_prompts
                ),
            ));
        }
        if n > self.max_n {
            return Err(ApiError::bad(
                "n",
                format!("n must be at most {} (--max-n), got {n}", self.max_n),
            ));
        }
        if prompts.saturating_mul(n) > self.max_seqs {
            return Err(ApiError::bad(
                "n",
                format!(
                    "{prompts} prompts × n = {n} is {} sequences; at most {} per request (--max-num-seqs)",
                    prompts.saturating_mul(n),
                    self.max_seqs
                ),
            ));
        }
        Ok(())
    }
}

/// Bytes of `s` a tokenizer cannot drop: ASCII whitespace and control characters may be
/// normalized away, everything else becomes part of some token.
pub fn countable_bytes(s: &str) -> usize {
    s.bytes()
        .filter(|b| !b.is_ascii_whitespace() && !b.is_ascii_control())
        .count()
}

/// The most countable bytes a prompt may have and still fit `max_model_len` tokens. No
/// token covers more text than its own vocabulary entry spells (`max_token_bytes`; byte-level
/// and SentencePiece spellings are longer than the text, never shorter); the factor 2 leaves
/// room for normalizers that shorten text (NFKC ligatures).
pub fn max_prompt_bytes(max_model_len: usize, max_token_bytes: usize) -> usize {
    max_model_len
        .saturating_mul(max_token_bytes.max(1))
        .saturating_mul(2)
}

/// 400 naming `param` when `bytes` countable bytes cannot fit the context.
pub fn check_prompt_bytes(
    bytes: usize,
    limit: usize,
    max_model_len: usize,
    param: &str,
) -> Result<(), ApiError> {
    if bytes > limit {
        return Err(ApiError::bad(
            param,
            format!(
                "the prompt is {bytes} bytes, more than this model's context of {max_model_len} tokens can hold (at most {limit} bytes); shorten it"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_caps() {
        let c = RequestCaps {
            max_prompts: 10,
            max_n: 8,
            max_seqs: 16,
        };
        assert!(c.check(10, 1).is_ok());
        assert!(c.check(2, 8).is_ok());
        assert_eq!(
            c.check(11, 1).unwrap_err().body().error.param.as_deref(),
            Some("prompt")
        );
        assert_eq!(
            c.check(1, 9).unwrap_err().body().error.param.as_deref(),
            Some("n")
        );
        assert!(c.check(3, 8).is_err());
    }

    #[test]
    fn byte_bound() {
        assert_eq!(countable_bytes(" a\tb\n\u{1}é"), 4);
        assert_eq!(max_prompt_bytes(100, 16), 3200);
        assert!(check_prompt_bytes(3200, 3200, 100, "prompt").is_ok());
        assert!(check_prompt_bytes(3201, 3200, 100, "prompt").is_err());
    }
}
