//! The incremental detokenizer and stop strings on arbitrary token sequences, heavy in
//! byte tokens: the Llama 2 SentencePiece vocabulary (`<0x..>` byte fallback, the
//! tiny-llama fixture) and SmolLM2's byte-level BPE one (the tokenizer of the
//! tiny-smollm2-tok GGUF fixture; the tiny-qwen2 fixture has Llama 2's). What must hold:
//! - the streamed pieces after the prompt's text are exactly the full decode whenever that
//!   decode has no U+FFFD, and then no piece holds one (no half-character is ever sent);
//!   for byte-level BPE always (its decode never rewrites text already complete);
//! - after a token that completes text (not a byte token), nothing is held back: the stream
//!   never stalls;
//! - stop strings: what is sent is the checker's text, which never contains a stop string.

#![no_main]

use arbitrary::Arbitrary;
use indus::engine::detokenizer::{IncrementalDetokenizer, StopChecker};
use indus::tokenizer::Tokenizer;
use indus::tokenizer::gguf::from_gguf;
use indus_models::gguf::GgufFile;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

struct Vocab {
    tok: Arc<Tokenizer>,
    /// Ids of the single-byte tokens.
    bytes: Vec<u32>,
    /// Whether the decoder is byte fallback (SentencePiece) rather than byte-level.
    byte_fallback: bool,
}

impl Vocab {
    fn load(tok: Arc<Tokenizer>, byte_fallback: bool) -> Self {
        let name = if byte_fallback { "llama 2" } else { "smollm2" };
        let is_byte = |s: &str| {
            if byte_fallback {
                s.len() == 6 && s.starts_with("<0x") && s.ends_with('>')
            } else {
                s.chars().count() == 1
            }
        };
        let bytes: Vec<u32> = (0..tok.vocab_size() as u32)
            .filter(|&id| tok.id_to_token(id).is_some_and(|s| is_byte(&s)))
            .collect();
        // Byte fallback has all 256; a byte-level vocabulary may merge rare bytes away.
        assert!(
            bytes.len() >= if byte_fallback { 256 } else { 128 },
            "fuzz setup: {name} has {} byte tokens",
            bytes.len()
        );
        Self {
            tok,
            bytes,
            byte_fallback,
        }
    }
}

static VOCABS: LazyLock<[Vocab; 2]> = LazyLock::new(|| {
    let gguf = indus::loader::repo_fixture("gguf/tiny-smollm2-tok.q8_0.gguf");
    let file = GgufFile::open(&gguf).expect("fuzz setup: SmolLM2 GGUF fixture");
    let smollm2 = from_gguf(&file, None).expect("fuzz setup: SmolLM2 tokenizer");
    [
        Vocab::load(indus_fuzz::fixture_tokenizer("tiny-llama"), true),
        Vocab::load(Arc::new(smollm2), false),
    ]
});

/// Words whose tokens end a byte run, in several scripts.
const WORDS: &[&str] = &[
    " the", "a", "\n", " ", "é", "中", "🚀", "ہے", ".", "STOP", "\u{FFFD}",
];

#[derive(Debug, Arbitrary)]
enum Pick {
    Byte(u8),
    /// Any id of the vocabulary.
    Any(u16),
    /// The first token of a word.
    Word(u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    byte_level: bool,
    skip_special_tokens: bool,
    with_prompt: bool,
    picks: Vec<Pick>,
    stop: Vec<String>,
}

fuzz_target!(|input: Input| {
    let v = &VOCABS[usize::from(input.byte_level)];
    let tok = &v.tok;
    let skip = input.skip_special_tokens;
    let prompt = if input.with_prompt {
        tok.encode("Translate:", true).expect("encode")
    } else {
        Vec::new()
    };
    let ids: Vec<u32> = input
        .picks
        .iter()
        .filter_map(|p| match *p {
            Pick::Byte(b) => Some(v.bytes[usize::from(b) % v.bytes.len()]),
            Pick::Any(i) => Some(u32::from(i) % tok.vocab_size() as u32),
            Pick::Word(w) => tok
                .encode(WORDS[usize::from(w) % WORDS.len()], false)
                .ok()?
                .first()
                .copied(),
        })
        .take(256)
        .collect();
    let stop: Vec<String> = input.stop.into_iter().filter(|s| !s.is_empty()).collect();
    let mut checker = StopChecker::new(stop.clone());
    let mut detok = IncrementalDetokenizer::new(prompt.len(), skip);
    let mut all = prompt.clone();
    let mut pieces = Vec::new();
    let (mut sent, mut stopped) = (String::new(), false);
    for (i, &t) in ids.iter().enumerate() {
        all.push(t);
        let last = i + 1 == ids.len();
        let piece = detok.step(tok, &all, last).expect("decode");
        if !last && completes_text(v, t, skip) {
            let held = detok.clone().step(tok, &all, true).expect("decode");
            assert!(
                held.is_empty(),
                "after token {t} the stream still holds {held:?}"
            );
        }
        if !stopped {
            stopped = checker.push(&piece).is_some();
            sent += &checker.take_sendable(stopped || last);
        }
        pieces.push(piece);
    }
    let full = tok.decode(&all, skip).expect("decode");
    let prompt_text = tok.decode(&prompt, skip).expect("decode");
    let streamed: String = pieces.concat();
    if !v.byte_fallback || !full.contains('\u{FFFD}') {
        assert_eq!(
            format!("{prompt_text}{streamed}"),
            full,
            "pieces {pieces:?}"
        );
        if !full.contains('\u{FFFD}') {
            assert!(!streamed.contains('\u{FFFD}'), "pieces {pieces:?}");
        }
    }
    if stopped || ids.is_empty() {
        assert!(streamed.starts_with(&sent), "sent {sent:?} of {streamed:?}");
    } else {
        assert_eq!(sent, streamed);
    }
    assert_eq!(sent, checker.text());
    for s in &stop {
        assert!(
            !checker.text().contains(s.as_str()),
            "{s:?} in {:?}",
            checker.text()
        );
    }
});

/// Whether `t` ends whatever text is pending: a token that is not a byte, is shown (not a
/// skipped special one) and does not itself spell U+FFFD.
fn completes_text(v: &Vocab, t: u32, skip: bool) -> bool {
    if v.bytes.contains(&t) || !v.byte_fallback {
        // Byte-level tokens are all byte sequences; any of them may leave a character open.
        return false;
    }
    let Ok(text) = v.tok.decode(&[t], skip) else {
        return false;
    };
    !text.is_empty() && !text.contains('\u{FFFD}')
}
