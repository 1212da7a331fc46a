//! Incremental detokenization and stop strings.
//!
//! Decoding one token at a time is wrong for SentencePiece and byte-level vocabularies: a
//! token's text depends on its left neighbour (leading-space handling) and a character may
//! span several byte-fallback tokens. So each step re-decodes a short window — from
//! `prefix_offset` (a few tokens of already-emitted context) to the end — and emits only what
//! grew past the window's old text, holding back while the text ends in an incomplete
//! character (U+FFFD). The emitted pieces therefore concatenate to exactly the full decode.
//!
//! Stop strings are matched on the accumulated text; the last `max_stop_len - 1` bytes are
//! held back while streaming so a stop string split across steps is never sent.

use crate::tokenizer::{Tokenizer, TokenizerError};

/// Tokens of the prompt used as left context for the first generated tokens.
const PROMPT_CONTEXT_TOKENS: usize = 5;

pub struct IncrementalDetokenizer {
    prefix_offset: usize,
    read_offset: usize,
    skip_special_tokens: bool,
}

impl IncrementalDetokenizer {
    /// Starts after a prompt of `prompt_len` tokens.
    pub fn new(prompt_len: usize, skip_special_tokens: bool) -> Self {
        Self {
            prefix_offset: prompt_len.saturating_sub(PROMPT_CONTEXT_TOKENS),
            read_offset: prompt_len,
            skip_special_tokens,
        }
    }

    /// New text after `tokens` (the whole sequence) grew. Empty while a character is
    /// incomplete, unless `flush` (the sequence ended) is set.
    pub fn step(
        &mut self,
        tokenizer: &Tokenizer,
        tokens: &[u32],
        flush: bool,
    ) -> Result<String, TokenizerError> {
        if tokens.len() <= self.read_offset {
            return Ok(String::new());
        }
        let skip = self.skip_special_tokens;
        let prefix = tokenizer.decode(&tokens[self.prefix_offset..self.read_offset], skip)?;
        let full = tokenizer.decode(&tokens[self.prefix_offset..], skip)?;
        if full.len() <= prefix.len() || !full.starts_with(prefix.as_str()) {
            // Nothing visible yet (e.g. a skipped special token), or the window's text was
            // rewritten; wait for more tokens rather than emit a non-suffix.
            if flush && full.len() > prefix.len() {
                return Ok(full[floor_boundary(&full, prefix.len())..].to_string());
            }
            return Ok(String::new());
        }
        if full.ends_with('\u{FFFD}') && !flush {
            return Ok(String::new());
        }
        let delta = full[prefix.len()..].to_string();
        self.prefix_offset = self.read_offset;
        self.read_offset = tokens.len();
        Ok(delta)
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The text of one choice: accumulated output, stop-string matching and the part already
/// sent.
pub struct StopChecker {
    stop: Vec<String>,
    max_stop_len: usize,
    text: String,
    sent: usize,
}

impl StopChecker {
    pub fn new(stop: Vec<String>) -> Self {
        let max_stop_len = stop.iter().map(String::len).max().unwrap_or(0);
        Self {
            stop,
            max_stop_len,
            text: String::new(),
            sent: 0,
        }
    }

    /// Adds new text; returns the stop string found, if any (the text is cut before it).
    pub fn push(&mut self, delta: &str) -> Option<String> {
        if delta.is_empty() || self.stop.is_empty() {
            self.text.push_str(delta);
            return None;
        }
        let search_from = floor_boundary(
            &self.text,
            self.text
                .len()
                .saturating_sub(self.max_stop_len.saturating_sub(1)),
        );
        self.text.push_str(delta);
        let window = &self.text[search_from..];
        let found = self
            .stop
            .iter()
            .filter_map(|s| window.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        let (at, s) = found?;
        let s = s.clone();
        self.text.truncate(search_from + at);
        self.sent = self.sent.min(self.text.len());
        Some(s)
    }

    /// Text that is safe to send now: all of it when finished, else all but a tail that
    /// could still be the start of a stop string.
    pub fn take_sendable(&mut self, finished: bool) -> String {
        let hold = if finished {
            0
        } else {
            self.max_stop_len.saturating_sub(1)
        };
        let end = floor_boundary(&self.text, self.text.len().saturating_sub(hold)).max(self.sent);
        let out = self.text[self.sent..end].to_string();
        self.sent = end;
        out
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_string_split_across_deltas_is_never_sent() {
        let mut s = StopChecker::new(vec!["STOP".into()]);
        let mut sent = String::new();
        for d in ["Hello S", "TO", "P more"] {
            let hit = s.push(d);
            sent += &s.take_sendable(hit.is_some());
            if hit.is_some() {
                break;
            }
        }
        assert_eq!(sent, "Hello ");
        assert_eq!(s.text(), "Hello ");
    }

    #[test]
    fn holdback_respects_char_boundaries() {
        let mut s = StopChecker::new(vec!["xyz".into()]);
        s.push("aé");
        let part = s.take_sendable(false);
        assert!(part == "a" || part.is_empty(), "{part}");
        let rest = s.take_sendable(true);
        assert_eq!(format!("{part}{rest}"), "aé");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut s = StopChecker::new(vec!["c".into(), "ab".into()]);
        assert_eq!(s.push("xxabc").as_deref(), Some("ab"));
        assert_eq!(s.text(), "xx");
    }
}
