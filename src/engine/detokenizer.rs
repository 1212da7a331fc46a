//! Incremental detokenization and stop strings.
//!
//! Decoding one token at a time is wrong for SentencePiece and byte-level vocabularies: a
//! token's text depends on its left neighbour (leading-space handling) and a character may
//! span several byte-fallback tokens. So each step re-decodes a short window — from
//! `prefix_offset` (a few tokens of already-emitted context) to the end — and emits only what
//! grew past the window's old text, holding back while the text ends in an incomplete
//! character (U+FFFD). The emitted pieces therefore concatenate to exactly the full decode —
//! unless a later byte token makes an already sent character invalid, which a byte-fallback
//! decoder answers by rewriting it (see `after_rewrite`).
//!
//! Stop strings are matched on the accumulated text; the last `max_stop_len - 1` bytes are
//! held back while streaming so a stop string split across steps is never sent.

use crate::tokenizer::{Tokenizer, TokenizerError};

/// Tokens of the prompt used as left context for the first generated tokens.
const PROMPT_CONTEXT_TOKENS: usize = 5;

/// Cloned to ask what a flush would send without changing the stream (the fuzz target).
#[derive(Debug, Clone)]
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
        if !full.starts_with(prefix.as_str()) {
            return self.after_rewrite(tokenizer, tokens, flush);
        }
        if full.len() == prefix.len() {
            // Nothing visible yet (e.g. a skipped special token).
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

    /// The new tokens rewrote the window's text, which was already sent. A byte-fallback
    /// decoder does this: a run of byte tokens that stops being valid UTF-8 (`<0xC3><0xA9>`
    /// sent as `é`, then `<0xA9>`) decodes as one U+FFFD per byte, the sent `é` included.
    /// Sent text cannot be taken back, so the new tokens are decoded on their own (`�`) and
    /// the window restarts at them; waiting for the window to agree again would hold every
    /// later piece until the sequence ends, re-decoding a growing window at each step.
    /// Held while that text ends in an incomplete character, which later bytes may complete
    /// (`<0xE4>` then `<0xB8><0xAD>` makes the window whole again).
    fn after_rewrite(
        &mut self,
        tokenizer: &Tokenizer,
        tokens: &[u32],
        flush: bool,
    ) -> Result<String, TokenizerError> {
        let new = tokenizer.decode(&tokens[self.read_offset..], self.skip_special_tokens)?;
        if new.is_empty() || (new.ends_with('\u{FFFD}') && !flush) {
            return Ok(String::new());
        }
        self.prefix_offset = self.read_offset;
        self.read_offset = tokens.len();
        Ok(new)
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

    /// Each step's piece for `output` streamed after `prompt`, flushed at the end.
    fn stream(tok: &Tokenizer, prompt: &[u32], output: &[u32]) -> Vec<String> {
        let mut detok = IncrementalDetokenizer::new(prompt.len(), true);
        let mut all = prompt.to_vec();
        output
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                all.push(t);
                detok.step(tok, &all, i + 1 == output.len()).unwrap()
            })
            .collect()
    }

    /// Llama 2's byte-fallback token of `b`.
    fn byte(tok: &Tokenizer, b: u8) -> u32 {
        let id = 3 + u32::from(b);
        assert_eq!(tok.id_to_token(id), Some(format!("<0x{b:02X}>")));
        id
    }

    #[test]
    fn a_byte_that_breaks_a_sent_character_does_not_stall_the_stream() {
        let tok = crate::tokenizer::tests::fixture();
        let prompt = tok.encode("Translate:", true).unwrap();
        let word = |w: &str| tok.encode(w, false).unwrap()[0];
        // `é` is sent at its second byte; the stray third byte then turns the whole run into
        // U+FFFDs in a full decode. Later text still streams as it comes.
        let (c3, a9) = (byte(&tok, 0xC3), byte(&tok, 0xA9));
        let output = [c3, a9, a9, word("b"), word("c")];
        assert_eq!(
            stream(&tok, &prompt, &output),
            ["", "é", "", "\u{FFFD} b", " c"]
        );
    }

    #[test]
    fn bytes_that_complete_a_character_after_a_sent_one_stream_it_whole() {
        let tok = crate::tokenizer::tests::fixture();
        let prompt = tok.encode("Translate:", true).unwrap();
        let [c3, a9, e4, b8, ad] = [0xC3, 0xA9, 0xE4, 0xB8, 0xAD].map(|b| byte(&tok, b));
        let output = [c3, a9, e4, b8, ad, tok.encode("b", false).unwrap()[0]];
        let pieces = stream(&tok, &prompt, &output);
        assert_eq!(pieces, ["", "é", "", "", "中", " b"]);
        let all: Vec<u32> = prompt.iter().chain(&output).copied().collect();
        let prompt_text = tok.decode(&prompt, true).unwrap();
        assert_eq!(
            format!("{prompt_text}{}", pieces.concat()),
            tok.decode(&all, true).unwrap()
        );
    }

    #[test]
    fn earliest_stop_wins() {
        let mut s = StopChecker::new(vec!["c".into(), "ab".into()]);
        assert_eq!(s.push("xxabc").as_deref(), Some("ab"));
        assert_eq!(s.text(), "xx");
    }
}
