//! Incremental detokenization with the real Llama 2 tokenizer (byte fallback): streamed
//! pieces are whole characters and concatenate to exactly the full decode, for Urdu, Chinese,
//! emoji and mixed text.

mod common;

use indus::engine::detokenizer::IncrementalDetokenizer;
use indus::tokenizer::Tokenizer;

fn tokenizer() -> Tokenizer {
    let dir = common::fixture_dir("tiny-llama");
    Tokenizer::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
        None,
        &[2],
        None,
    )
    .unwrap()
}

const TEXTS: [&str; 5] = [
    "پاکستان ایک خوبصورت ملک ہے۔ کراچی اور لاہور بڑے شہر ہیں",
    "你好，世界！今天天气很好。",
    "Launch 🚀🌍 done ✅ — naïve café 👩‍👩‍👧",
    "  leading spaces and\nnew\tlines  ",
    "mixed اردو and 中文 and emoji 🇵🇰 in one line",
];

#[test]
fn streamed_pieces_are_whole_characters_and_concatenate_to_the_decode() {
    let tok = tokenizer();
    for text in TEXTS {
        let prompt = tok.encode("Translate:", true).unwrap();
        let output = tok.encode(text, false).unwrap();
        assert!(
            output
                .iter()
                .any(|&t| tok.id_to_token(t).is_some_and(|s| s.starts_with("<0x"))),
            "the test text should need byte-fallback tokens: {text}"
        );
        let mut all = prompt.clone();
        let mut detok = IncrementalDetokenizer::new(prompt.len(), true);
        let mut streamed = String::new();
        for (i, &t) in output.iter().enumerate() {
            all.push(t);
            let last = i + 1 == output.len();
            let piece = detok.step(&tok, &all, last).unwrap();
            assert!(
                !piece.contains('\u{FFFD}'),
                "split character in piece {piece:?} of {text}"
            );
            streamed.push_str(&piece);
        }
        let full = tok.decode(&all, true).unwrap();
        let prompt_text = tok.decode(&prompt, true).unwrap();
        assert_eq!(format!("{prompt_text}{streamed}"), full, "for {text}");
    }
}

#[test]
fn an_unfinished_character_is_flushed_at_the_end() {
    let tok = tokenizer();
    // The first byte of a 3-byte character alone: held back until the sequence ends, then
    // flushed as a replacement character rather than lost.
    let prompt = tok.encode("x", true).unwrap();
    // Llama's byte tokens <0x00>..<0xFF> are ids 3..=258.
    let first_byte = 3 + 0xE4;
    assert_eq!(tok.id_to_token(first_byte).as_deref(), Some("<0xE4>"));
    let mut detok = IncrementalDetokenizer::new(prompt.len(), true);
    let mut all = prompt.clone();
    all.push(first_byte);
    assert_eq!(detok.step(&tok, &all, false).unwrap(), "");
    assert_eq!(detok.step(&tok, &all, true).unwrap(), "\u{FFFD}");
}
