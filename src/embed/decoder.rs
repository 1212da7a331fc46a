//! Decoder embedding models (Qwen3-Embedding and the like): the chat engine computes the
//! prompt as a prefill-only request and the last token's final hidden state is the
//! embedding — the paged cache, batching and chunked prefill are the engine's own.

use super::handle::{PoolingInfo, PoolingTask};
use crate::config::ModelArgs;
use crate::engine::EngineLimits;
use crate::loader::LoadError;
use indus_models::encoder::{Pooling, SentenceConfig};
use indus_models::{ModelFiles, ModelSource};

/// What `--task` (`auto`, `generate`, `embed`) makes of the chat model: `Some` when it
/// serves embeddings. `auto` means a sentence-transformers checkpoint (with
/// `modules.json`) embeds; its pooling must be last-token (the engine computes the last
/// token's state only). Without `modules.json`, `embed` pools the last token, normalized.
pub fn decoder_embedding(
    args: &ModelArgs,
    task: &str,
    limits: EngineLimits,
    max_client_batch_size: usize,
) -> Result<Option<PoolingInfo>, LoadError> {
    let dir = model_dir(args);
    let has_modules = dir
        .as_ref()
        .is_some_and(|d| d.join("modules.json").is_file());
    let embed = match task {
        "generate" => false,
        "embed" => true,
        "auto" => has_modules,
        other => {
            return Err(LoadError::Config(format!(
                "unknown --task `{other}` (auto, generate, embed)"
            )));
        }
    };
    if !embed {
        return Ok(None);
    }
    let (any_dimensions, matryoshka_dimensions) = matryoshka(dir.as_deref());
    let sentence = match dir.filter(|_| has_modules) {
        Some(d) => SentenceConfig::read(&d)?,
        None => SentenceConfig {
            pooling: Pooling::LastToken,
            normalize: true,
            max_seq_length: None,
            do_lower_case: false,
        },
    };
    if sentence.pooling != Pooling::LastToken {
        return Err(LoadError::Config(format!(
            "decoder embedding models pool the last token; this checkpoint asks for `{}` pooling",
            sentence.pooling.as_str()
        )));
    }
    Ok(Some(PoolingInfo {
        task: PoolingTask::Embed,
        dimensions: limits.hidden_size,
        max_input_tokens: sentence
            .max_seq_length
            .map_or(limits.max_model_len, |m| m.min(limits.max_model_len)),
        vocab_size: limits.vocab_size,
        any_dimensions,
        matryoshka_dimensions,
        normalized: sentence.normalize,
        weight_bytes: 0,
        max_client_batch_size,
    }))
}

/// The directory holding the model's config (local or hub snapshot); `None` for the
/// embedded model and GGUF files.
fn model_dir(args: &ModelArgs) -> Option<std::path::PathBuf> {
    let name = args.model_name().ok().flatten()?;
    let source = ModelSource::parse(name, args.revision.as_deref());
    let files = ModelFiles::resolve_with(&source, false, args.gguf_file.as_deref()).ok()?;
    files.config?.parent().map(std::path::Path::to_path_buf)
}

/// `is_matryoshka` / `matryoshka_dimensions` of config.json (vLLM's keys).
fn matryoshka(dir: Option<&std::path::Path>) -> (bool, Vec<usize>) {
    let Some(text) = dir.and_then(|d| std::fs::read_to_string(d.join("config.json")).ok()) else {
        return (false, Vec::new());
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let dims = v["matryoshka_dimensions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64().map(|d| d as usize))
                .collect()
        })
        .unwrap_or_default();
    (v["is_matryoshka"].as_bool().unwrap_or(false), dims)
}
