//! The bytes each token id stands for, as a grammar engine needs them: the text a token adds
//! to the output, byte for byte, whatever the tokenizer's own spelling of it (GPT-2's byte
//! alphabet, SentencePiece's `▁` and `<0xNN>` byte-fallback pieces).

use super::Tokenizer;

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenBytes {
    /// Ordinary text: the bytes this token appends to the output.
    Text(Vec<u8>),
    /// A special or control token (`<|im_end|>`, `</s>`): never part of a grammar's text.
    Special(String),
    /// An id the vocabulary does not use.
    Unused,
}

/// GPT-2's reversible byte → printable-character map, inverted (character → byte).
fn byte_level_inverse() -> std::collections::HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut next = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + next);
            next += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

/// `<0x0A>` → 0x0A.
fn byte_fallback_piece(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// Bytes of every id below [`Self::vocab_size`]. Byte-level BPE pieces are mapped back
    /// through GPT-2's alphabet; otherwise `<0xNN>` pieces are single bytes and `▁` is a
    /// space (SentencePiece). Added tokens are their literal text, special ones marked.
    pub fn token_bytes(&self) -> Vec<TokenBytes> {
        let decoder = self
            .inner
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok())
            .unwrap_or_default();
        let byte_level = decoder.contains("\"ByteLevel\"");
        let inverse = byte_level.then(byte_level_inverse);
        let added = self.inner.get_added_tokens_decoder();
        let mut out = vec![TokenBytes::Unused; self.vocab_size()];
        for (id, slot) in out.iter_mut().enumerate() {
            let id = id as u32;
            if let Some(tok) = added.get(&id) {
                *slot = if tok.special {
                    TokenBytes::Special(tok.content.clone())
                } else {
                    TokenBytes::Text(tok.content.as_bytes().to_vec())
                };
                continue;
            }
            let Some(piece) = self.inner.id_to_token(id) else {
                continue;
            };
            *slot = match &inverse {
                Some(map) => {
                    let bytes: Option<Vec<u8>> =
                        piece.chars().map(|c| map.get(&c).copied()).collect();
                    // A piece outside the byte alphabet is literal text (some vocabularies
                    // mix in unmapped entries).
                    TokenBytes::Text(bytes.unwrap_or_else(|| piece.as_bytes().to_vec()))
                }
                None => match byte_fallback_piece(&piece) {
                    Some(b) => TokenBytes::Text(vec![b]),
                    None => TokenBytes::Text(piece.replace('\u{2581}', " ").into_bytes()),
                },
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_alphabet_is_a_bijection_over_all_bytes() {
        let inv = byte_level_inverse();
        assert_eq!(inv.len(), 256);
        let mut bytes: Vec<u8> = inv.values().copied().collect();
        bytes.sort_unstable();
        assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
        assert_eq!(inv[&'Ġ'], b' ');
        assert_eq!(inv[&'Ċ'], b'\n');
        assert_eq!(inv[&'a'], b'a');
    }

    #[test]
    fn byte_fallback_pieces_are_single_bytes() {
        assert_eq!(byte_fallback_piece("<0x0A>"), Some(0x0A));
        assert_eq!(byte_fallback_piece("<0xE2>"), Some(0xE2));
        assert_eq!(byte_fallback_piece("<0x0A"), None);
        assert_eq!(byte_fallback_piece("<s>"), None);
    }
}
