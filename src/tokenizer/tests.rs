use super::*;

/// The Llama 2 tokenizer of the tiny-llama fixture (shared with other modules' tests).
pub(crate) fn fixture() -> Tokenizer {
    Tokenizer::from_dir(&crate::loader::repo_fixture("tiny-llama"), &[], None).unwrap()
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

#[test]
fn the_shipped_hermes_template_renders_tools_calls_and_results() {
    let src = include_str!("../../templates/tool_chat_hermes.jinja");
    let t = ChatTemplate::new(src.to_string(), "<s>".into(), "</s>".into()).unwrap();
    let tools = [serde_json::json!({"type": "function", "function": {"name": "get_weather"}})];
    let mut call = ChatMessage::new("assistant", "");
    call.tool_calls = Some(vec![serde_json::json!({"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Lahore"}}})]);
    let mut result = ChatMessage::new("tool", "31 C");
    result.tool_call_id = Some("call_1".into());
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Weather in Lahore?"),
        call,
        result,
    ];
    let got = t.render(&messages, Some(&tools), true).unwrap();
    let want = "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"function\":{\"name\":\"get_weather\"},\"type\":\"function\"}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Lahore?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Lahore\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n31 C\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(got, want);
    // Without tools it is plain ChatML.
    let got = t
        .render(&[ChatMessage::new("user", "Hi")], None, true)
        .unwrap();
    assert_eq!(
        got,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}
