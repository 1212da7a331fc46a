//! Our tokenizer as llguidance sees it: a token trie over each id's bytes, and tokenization
//! of byte strings (used when a grammar forces text).

use crate::tokenizer::{TokenBytes, Tokenizer};
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use std::sync::Arc;

struct IndusTokEnv {
    trie: TokTrie,
}

impl TokenizerEnv for IndusTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Greedy longest-match over the trie: exactly the bytes asked for. The tokenizer's own
    /// encoding would add what its normalizer adds (SentencePiece's leading space), and the
    /// grammar would then force text that is not in it.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }
}

/// Builds the token environment: special tokens carry llguidance's 0xFF marker, so grammars
/// can name them but never produce them as text; unused ids are marked the same way.
pub fn tok_env(tokenizer: &Arc<Tokenizer>) -> Result<TokEnv, super::GuidedError> {
    let words: Vec<Vec<u8>> = tokenizer
        .token_bytes()
        .into_iter()
        .enumerate()
        .map(|(id, t)| match t {
            TokenBytes::Text(b) => b,
            TokenBytes::Special(name) => special(&name),
            TokenBytes::Unused => special(&format!("<[{id}]>")),
        })
        .collect();
    let eos = tokenizer.eos_token_ids();
    let Some(&first_eos) = eos.first() else {
        return Err(super::GuidedError::Unavailable(
            "the tokenizer declares no end-of-sequence token".into(),
        ));
    };
    let mut info = TokRxInfo::new(words.len() as u32, first_eos);
    info.tok_bos = tokenizer.bos_token_id();
    let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
    Ok(Arc::new(IndusTokEnv { trie }))
}

fn special(name: &str) -> Vec<u8> {
    let mut b = vec![TokTrie::SPECIAL_TOKEN_MARKER];
    b.extend_from_slice(name.as_bytes());
    b
}
