//! The tokenizer a GGUF file carries, rebuilt as a Hugging Face `tokenizers` pipeline:
//! - `gpt2`: byte-level BPE from `tokens` + `merges`, with the pre-tokenizer that
//!   `tokenizer.ggml.pre` names (an unknown one is an error, never a guess: a wrong split
//!   tokenizes fluently and wrongly);
//! - `llama`: SentencePiece BPE with byte fallback; merges derived from the scores the way
//!   transformers' SentencePiece converter does.
//!
//! Control and unknown tokens become special added tokens, user-defined ones plain added
//! tokens, as llama.cpp's converter typed them.

use super::{Result, Tokenizer, TokenizerError};
use indus_models::gguf::GgufFile;
use serde_json::{Value, json};
use std::collections::HashMap;

/// llama.cpp's token types (`llama_token_type`).
const TOKEN_UNKNOWN: i64 = 2;
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Llama 3's split (also DeepSeek 3 / SmolLM3 "llama-bpe" family).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: as Llama 3's but one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn load_err(file: &GgufFile, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::Load {
        path: file.path().display().to_string(),
        reason: reason.into(),
    }
}

fn byte_level(use_regex: bool, trim_offsets: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": trim_offsets, "use_regex": use_regex})
}

fn split(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

/// (normalizer, pre-tokenizer, ignore_merges) of a gpt2-style vocabulary.
fn gpt2_pipeline(file: &GgufFile, pre: &str) -> Result<(Value, Value, bool)> {
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" => (Value::Null, byte_level(true, true), false),
        "smollm" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true, true),
            ]}),
            false,
        ),
        "llama-bpe" | "llama3" => (
            Value::Null,
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false, true)]}),
            true,
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false, false)]}),
            false,
        ),
        other => {
            return Err(load_err(
                file,
                format!(
                    "tokenizer.ggml.pre `{other}` is not supported (default, gpt2, smollm, llama-bpe, qwen2); pass --tokenizer with the model's tokenizer.json"
                ),
            ));
        }
    })
}

/// SentencePiece merges as the Hugging Face tokenizer.json files of SentencePiece models
/// have them (transformers' `SentencePieceExtractor` without scores): every split of every
/// piece into two pieces of the vocabulary, ordered by the whole piece's id, then by the
/// halves' ids. Not by score: Llama 2's whitespace pieces (`▁▁`, `▁▁▁▁`) score -1e9 yet are
/// merged first in its tokenizer.json, and ordering by score splits indented code
/// differently.
fn spm_merges(tokens: &[&str]) -> Vec<(String, String)> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges = Vec::new();
    for piece in tokens {
        let mut local = Vec::new();
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                local.push((li, ri));
            }
        }
        local.sort_unstable();
        merges.extend(
            local
                .into_iter()
                .map(|(l, r)| (tokens[l].to_string(), tokens[r].to_string())),
        );
    }
    merges
}

/// Builds the tokenizer of `file`; `template_override` replaces the file's chat template.
pub fn from_gguf(file: &GgufFile, template_override: Option<String>) -> Result<Tokenizer> {
    let gguf_err = |e: indus_models::gguf::GgufError| load_err(file, e.to_string());
    let model_kind = file.str("tokenizer.ggml.model").map_err(gguf_err)?;
    let tokens = file.str_array("tokenizer.ggml.tokens").map_err(gguf_err)?;
    let types = file
        .opt_num_array("tokenizer.ggml.token_type")
        .map_err(gguf_err)?
        .unwrap_or_default();
    if !types.is_empty() && types.len() != tokens.len() {
        return Err(load_err(
            file,
            format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            ),
        ));
    }
    let id_key = |k: &str| -> Result<Option<u32>> {
        let v = file.opt_usize(k).map_err(gguf_err)?;
        match v {
            Some(id) if id >= tokens.len() => Err(load_err(
                file,
                format!(
                    "{k} = {id} is outside the {}-token vocabulary",
                    tokens.len()
                ),
            )),
            Some(id) => Ok(Some(id as u32)),
            None => Ok(None),
        }
    };
    let bos = id_key("tokenizer.ggml.bos_token_id")?;
    let eos = id_key("tokenizer.ggml.eos_token_id")?;
    let unk = id_key("tokenizer.ggml.unknown_token_id")?;
    let eot = id_key("tokenizer.ggml.eot_token_id")?;
    let eom = id_key("tokenizer.ggml.eom_token_id")?;

    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        // A duplicate piece keeps its first id, as the HF vocab (a map) would.
        vocab.entry(t.to_string()).or_insert(json!(i));
    }
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let ty = types.get(i).map(|&v| v as i64)?;
            let special = ty == TOKEN_CONTROL || ty == TOKEN_UNKNOWN;
            (special || ty == TOKEN_USER_DEFINED).then(|| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": special})
            })
        })
        .collect();

    let (spec, add_bos_default) = match model_kind {
        "gpt2" => {
            let pre = file
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            let (normalizer, pre_tokenizer, ignore_merges) = gpt2_pipeline(file, pre)?;
            let merges: Vec<Value> = file
                .str_array("tokenizer.ggml.merges")
                .map_err(gguf_err)?
                .iter()
                .map(|m| {
                    m.split_once(' ')
                        .map(|(a, b)| json!([a, b]))
                        .ok_or_else(|| load_err(file, format!("merge `{m}` has no space")))
                })
                .collect::<Result<_>>()?;
            let spec = json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added,
                "normalizer": normalizer,
                "pre_tokenizer": pre_tokenizer,
                "post_processor": null,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null,
                          "continuing_subword_prefix": null, "end_of_word_suffix": null,
                          "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                          "vocab": vocab, "merges": merges},
            });
            (spec, false)
        }
        "llama" => {
            let add_prefix = file
                .opt_bool("tokenizer.ggml.add_space_prefix")
                .map_err(gguf_err)?
                .unwrap_or(true);
            let merges: Vec<Value> = spm_merges(&tokens)
                .into_iter()
                .map(|(a, b)| json!([a, b]))
                .collect();
            let mut normalizers = Vec::new();
            let mut decoders = vec![
                json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
                json!({"type": "ByteFallback"}),
                json!({"type": "Fuse"}),
            ];
            if add_prefix {
                normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
                decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            normalizers
                .push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
            let unk_token = unk.map(|u| tokens[u as usize].to_string());
            let spec = json!({
                "version": "1.0", "truncation": null, "padding": null,
                "added_tokens": added,
                "normalizer": {"type": "Sequence", "normalizers": normalizers},
                "pre_tokenizer": null,
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": decoders},
                "model": {"type": "BPE", "dropout": null, "unk_token": unk_token,
                          "continuing_subword_prefix": null, "end_of_word_suffix": null,
                          "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                          "vocab": vocab, "merges": merges},
            });
            (spec, true)
        }
        other => {
            return Err(load_err(
                file,
                format!(
                    "tokenizer.ggml.model `{other}` is not supported (gpt2, llama); pass --tokenizer"
                ),
            ));
        }
    };
    let text = serde_json::to_string(&spec).map_err(|e| load_err(file, e.to_string()))?;
    let inner: tokenizers::Tokenizer = text
        .parse()
        .map_err(|e: tokenizers::Error| load_err(file, e.to_string()))?;
    let add_bos = file
        .opt_bool("tokenizer.ggml.add_bos_token")
        .map_err(gguf_err)?
        .unwrap_or(add_bos_default);
    let named = |id: Option<u32>| id.map(|i| (tokens[i as usize].to_string(), i));
    let mut eos_ids: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
    eos_ids.dedup();
    let (bos, eos) = (named(bos), named(eos));
    let template_source = template_override.or_else(|| {
        file.get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string)
    });
    Tokenizer::from_parts(
        inner,
        add_bos && bos.is_some(),
        bos,
        eos,
        eos_ids,
        template_source,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spm_merges_follow_the_merged_pieces_id() {
        // Scores would put bc (-0.5) before ab (-1.0); the order is by the merged piece's id
        // (ab = 3 before bc = 4, then the two ways to make abc = 5), halves by id.
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let m = spm_merges(&tokens);
        let m: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(m, vec![("a", "b"), ("b", "c"), ("a", "bc"), ("ab", "c")]);
    }
}
