//! GGUF files: the container reader on arbitrary bytes, then what the server builds from a
//! file that parses — the model config, the model itself (CPU, tiny tensors), and the
//! tokenizer and chat template the file carries. Every length in a GGUF file is a claim: a
//! lying one must be an error, never a panic or an allocation the file cannot back (the
//! runner sets libFuzzer's malloc limit to catch those).

#![no_main]

use indus::tokenizer::{ChatMessage, gguf::from_gguf};
use indus_models::CausalLm;
use indus_models::gguf::{GgufFile, config_from_gguf};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    for info in file.tensors().values() {
        assert_eq!(file.tensor_bytes(info).len(), info.len);
        let _ = info.row_bytes();
    }
    for (key, value) in file.metadata() {
        let _ = (
            value.as_u64(),
            value.as_i64(),
            value.as_f64(),
            value.as_bool(),
        );
        let _ = (file.opt_usize(key), file.opt_f64(key), file.str_array(key));
        let _ = file.opt_num_array(key);
    }
    let file = Arc::new(file);
    if config_from_gguf(&file).is_ok() {
        let _ = CausalLm::load_gguf(file.clone(), &Default::default());
    }
    let Ok(tok) = from_gguf(&file, None) else {
        return;
    };
    let Ok(ids) = tok.encode("Hello wörld 🚀 <s>", true) else {
        return;
    };
    let _ = tok.decode(&ids, false);
    let _ = tok.token_bytes();
    if tok.has_chat_template() {
        let _ = tok.apply_chat_template(&[ChatMessage::new("user", "Hi")], true);
    }
});
