//! Tokenizing encoder inputs the way sentence-transformers does: special tokens added by
//! the checkpoint's post-processor, and — only when asked — truncation to a token budget
//! (pairs truncated longest-first, as Hugging Face tokenizers do). Over-long inputs are
//! otherwise refused, never silently cut.

use indus_models::encoder::EncoderInput;
use std::path::Path;
use tokenizers::PostProcessor;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncodeError {
    #[error("input has {tokens} tokens, more than the model's limit of {max} tokens")]
    TooLong { tokens: usize, max: usize },
    #[error("input is empty")]
    Empty,
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// How inputs longer than the limit are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Refuse inputs of more than this many tokens.
    AtMost(usize),
    /// Cut inputs to this many tokens (special tokens included).
    TruncateTo(usize),
}

pub struct EncoderTokenizer {
    inner: tokenizers::Tokenizer,
    lowercase: bool,
}

impl EncoderTokenizer {
    /// `lowercase`: sentence-transformers' `do_lower_case`, applied before tokenizing.
    pub fn from_file(path: &Path, lowercase: bool) -> Result<Self, EncodeError> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| EncodeError::Tokenizer(format!("{}: {e}", path.display())))?;
        // A tokenizer.json may carry its own padding/truncation; batching and limits are
        // ours (padding is added by the model's batcher, limits by `Length`).
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        Ok(Self { inner, lowercase })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn added(&self, pair: bool) -> usize {
        self.inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(pair))
    }

    fn raw(&self, text: &str) -> Result<tokenizers::Encoding, EncodeError> {
        if text.is_empty() {
            return Err(EncodeError::Empty);
        }
        let text = if self.lowercase {
            std::borrow::Cow::Owned(text.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(text)
        };
        self.inner
            .encode(text.as_ref(), false)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))
    }

    fn finish(
        &self,
        first: tokenizers::Encoding,
        second: Option<tokenizers::Encoding>,
        length: Length,
    ) -> Result<EncoderInput, EncodeError> {
        let pair = second.is_some();
        let (mut first, mut second) = (first, second);
        let added = self.added(pair);
        let tokens = first.len() + second.as_ref().map_or(0, |s| s.len()) + added;
        match length {
            Length::AtMost(max) if tokens > max => {
                return Err(EncodeError::TooLong { tokens, max });
            }
            Length::TruncateTo(max) if tokens > max => {
                let budget = max.saturating_sub(added);
                match second.as_mut() {
                    None => first.truncate(budget, 0, tokenizers::TruncationDirection::Right),
                    Some(s) => {
                        let (n1, n2) = longest_first(first.len(), s.len(), budget);
                        first.truncate(n1, 0, tokenizers::TruncationDirection::Right);
                        s.truncate(n2, 0, tokenizers::TruncationDirection::Right);
                    }
                }
            }
            _ => {}
        }
        let enc = self
            .inner
            .post_process(first, second, true)
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))?;
        Ok(EncoderInput {
            ids: enc.get_ids().to_vec(),
            type_ids: enc.get_type_ids().to_vec(),
        })
    }

    /// One text, with the model's special tokens.
    pub fn encode(&self, text: &str, length: Length) -> Result<EncoderInput, EncodeError> {
        self.finish(self.raw(text)?, None, length)
    }

    /// A (query, document) pair for a cross-encoder.
    pub fn encode_pair(
        &self,
        first: &str,
        second: &str,
        length: Length,
    ) -> Result<EncoderInput, EncodeError> {
        self.finish(self.raw(first)?, Some(self.raw(second)?), length)
    }
}

/// Token counts the two parts of a pair keep within `budget`: the longer is cut first,
/// and when both must be cut they split the budget evenly (Hugging Face's longest_first).
fn longest_first(n1: usize, n2: usize, budget: usize) -> (usize, usize) {
    if n1 + n2 <= budget {
        return (n1, n2);
    }
    let (short, long, swapped) = if n1 > n2 {
        (n2, n1, true)
    } else {
        (n1, n2, false)
    };
    let (mut a, mut b) = (short, long);
    b = if a > budget {
        a
    } else {
        b.min(a.max(budget - a))
    };
    if a + b > budget {
        a = budget / 2;
        b = a + budget % 2;
    }
    if swapped { (b, a) } else { (a, b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_first_cuts_the_longer_part_first() {
        assert_eq!(longest_first(3, 4, 10), (3, 4));
        assert_eq!(longest_first(3, 20, 10), (3, 7));
        assert_eq!(longest_first(20, 3, 10), (7, 3));
        assert_eq!(longest_first(20, 30, 10), (5, 5));
        assert_eq!(longest_first(20, 30, 11), (5, 6));
        assert_eq!(longest_first(30, 20, 11), (6, 5));
    }
}
