//! Engine logprobs → the two OpenAI shapes (legacy completions and chat).

use super::types::{ChatTokenLogprob, CompletionLogprobs, TopLogprob};
use crate::engine::TokenLogprob;
use crate::tokenizer::Tokenizer;

/// The text of one token as a client should see it, and its bytes. Byte-fallback tokens
/// (`<0xE4>`) keep their vocabulary form and report the one raw byte.
pub fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let piece = tok.id_to_token(id).unwrap_or_default();
    if let Some(hex) = piece.strip_prefix("<0x").and_then(|s| s.strip_suffix('>'))
        && hex.len() == 2
        && let Ok(b) = u8::from_str_radix(hex, 16)
    {
        return (piece, vec![b]);
    }
    let text = if piece.contains('\u{2581}') {
        // SentencePiece marks a leading space with ▁, which decoding a lone token drops.
        piece.replace('\u{2581}', " ")
    } else {
        tok.decode(&[id], false).unwrap_or(piece)
    };
    let bytes = text.as_bytes().to_vec();
    (text, bytes)
}

pub fn chat(tok: &Tokenizer, lps: &[TokenLogprob]) -> Vec<ChatTokenLogprob> {
    lps.iter()
        .map(|lp| {
            let (token, bytes) = token_text(tok, lp.token_id);
            ChatTokenLogprob {
                token,
                logprob: lp.logprob,
                bytes: Some(bytes),
                top_logprobs: lp
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let (token, bytes) = token_text(tok, id);
                        TopLogprob {
                            token,
                            logprob,
                            bytes: Some(bytes),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Legacy logprobs of `lps`, whose first token starts at byte `offset` of the choice's text;
/// returns the offset after the last token.
pub fn completion(
    tok: &Tokenizer,
    lps: &[TokenLogprob],
    mut offset: usize,
    out: &mut CompletionLogprobs,
) -> usize {
    for lp in lps {
        let (token, _) = token_text(tok, lp.token_id);
        let mut top = serde_json::Map::new();
        for &(id, logprob) in &lp.top {
            top.insert(token_text(tok, id).0, serde_json::json!(logprob));
        }
        out.text_offset.push(offset);
        offset += token.len();
        out.tokens.push(token);
        out.token_logprobs.push(Some(lp.logprob));
        out.top_logprobs.push(Some(top));
    }
    offset
}
