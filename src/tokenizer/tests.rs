use super::*;
use std::path::PathBuf;

/// The Llama 2 tokenizer of the tiny-llama fixture (shared with other modules' tests).
pub(crate) fn fixture() -> Tokenizer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
    Tokenizer::from_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
        Some(&dir.join("generation_config.json")),
        &[],
        None,
    )
    .unwrap()
}

#[test]
fn adds_bos_like_transformers() {
    let t = fixture();
    let ids = t
        .encode("The quick brown fox jumps over the lazy dog.", true)
        .unwrap();
    assert_eq!(
        ids,
        [
            1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889
        ]
    );
    assert_eq!(t.encode("The", false).unwrap(), [450]);
    assert_eq!(t.eos_token_ids(), [2]);
}

#[test]
fn round_trips_multibyte_text() {
    let t = fixture();
    for text in [
        "پاکستان ایک خوبصورت ملک ہے",
        "你好，世界 🌍🚀",
        "naïve café",
    ] {
        let ids = t.encode(text, false).unwrap();
        assert_eq!(t.decode(&ids, true).unwrap(), text);
    }
}

#[test]
fn renders_llama2_chat_template() {
    let t = fixture();
    let text = t
        .apply_chat_template(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", " Hi "),
            ],
            true,
        )
        .unwrap();
    // As in Python: strip() applies to system + content as a whole.
    assert_eq!(
        text,
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST]"
    );
    let err = t
        .apply_chat_template(&[ChatMessage::new("assistant", "x")], true)
        .unwrap_err();
    assert!(err.to_string().contains("alternate"), "{err}");
}

/// The bytes of a text's tokens, joined, are the text: what a grammar engine relies on.
#[test]
fn token_bytes_join_back_to_the_text() {
    let t = fixture();
    let table = t.token_bytes();
    assert_eq!(table.len(), t.vocab_size());
    assert_eq!(table[2], TokenBytes::Special("</s>".into()));
    for text in [
        "The quick brown fox.",
        "{\"a\": [1, 2.5e-3, null]}\n\ttabs",
        "اردو میں جواب دیں 😀",
    ] {
        let mut joined = Vec::new();
        for id in t.encode(text, false).unwrap() {
            match &table[id as usize] {
                TokenBytes::Text(b) => joined.extend_from_slice(b),
                other => panic!("token {id} of {text:?} is {other:?}"),
            }
        }
        // SentencePiece prepends a space to the text.
        assert_eq!(String::from_utf8(joined).unwrap(), format!(" {text}"));
    }
}
