//! From a model name to a running encoder: resolve the files, read the sentence-transformers
//! pipeline, load the weights, start the worker.

use super::handle::{PoolingHandle, PoolingInfo, PoolingOptions, PoolingTask};
use super::tokenize::EncoderTokenizer;
use crate::config::PoolingArgs;
use crate::loader::LoadError;
use indus_models::encoder::{EncoderConfig, PoolingModel};
use indus_models::{LoadOptions, ModelFiles, ModelSource};

/// A started encoder and what /v1/models shows of it.
pub struct StartedPooling {
    pub handle: PoolingHandle,
    /// Served name (`NAME=` prefix of the flag, else the model as named).
    pub name: String,
    /// Where it came from.
    pub root: String,
}

/// Whether the model `args` names is an encoder checkpoint (then `indus serve` serves it
/// for embeddings or reranking instead of chat). Resolving fetches only config and
/// tokenizer; a model that cannot be resolved is left to the chat loader to report.
pub fn is_encoder_model(args: &crate::config::ModelArgs) -> bool {
    let Ok(Some(name)) = args.model_name() else {
        return false;
    };
    let source = ModelSource::parse(name, args.revision.as_deref());
    let Ok(files) = ModelFiles::resolve_with(&source, false, args.gguf_file.as_deref()) else {
        return false;
    };
    files
        .config
        .and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|t| EncoderConfig::is_encoder_config(&t))
}

/// Splits `NAME=MODEL` (the name clients use) from a plain `MODEL`.
pub fn split_name(spec: &str) -> (Option<&str>, &str) {
    match spec.split_once('=') {
        Some((n, m)) if !n.is_empty() && !m.is_empty() => (Some(n), m),
        _ => (None, spec),
    }
}

/// Loads one encoder (`spec`: `MODEL` or `NAME=MODEL`) on `device_name` and starts its
/// worker. `nice` lowers its threads' priority when a chat model shares the cores.
pub fn start_pooling(
    spec: &str,
    revision: Option<&str>,
    device_name: &str,
    args: &PoolingArgs,
    nice: i32,
) -> Result<StartedPooling, LoadError> {
    let (name, model) = split_name(spec);
    let device = crate::loader::parse_device(device_name)?;
    let files = ModelFiles::resolve(&ModelSource::parse(model, revision), true)?;
    let started = std::time::Instant::now();
    let opts = LoadOptions {
        dtype: candle_core::DType::F32,
        device,
        ..LoadOptions::default()
    };
    let model_obj = PoolingModel::load(&files, &opts)?;
    let tokenizer_path = files
        .tokenizer
        .as_ref()
        .ok_or_else(|| LoadError::Config(format!("{} has no tokenizer.json", files.name)))?;
    let tokenizer = EncoderTokenizer::from_file(tokenizer_path, model_obj.sentence().do_lower_case)
        .map_err(|e| LoadError::Config(e.to_string()))?;
    let cfg = model_obj.config();
    let info = PoolingInfo {
        task: if model_obj.is_classifier() {
            PoolingTask::Score
        } else {
            PoolingTask::Embed
        },
        dimensions: model_obj.hidden_size(),
        max_input_tokens: model_obj.max_input_tokens(),
        vocab_size: cfg.vocab_size,
        any_dimensions: cfg.is_matryoshka,
        matryoshka_dimensions: cfg.matryoshka_dimensions.clone(),
        normalized: model_obj.sentence().normalize,
        weight_bytes: model_obj.weight_bytes(),
        max_client_batch_size: args.max_client_batch_size.max(1),
    };
    tracing::info!(
        model = %files.name,
        task = info.task.as_str(),
        dimensions = info.dimensions,
        max_input_tokens = info.max_input_tokens,
        pooling = model_obj.sentence().pooling.as_str(),
        secs = started.elapsed().as_secs_f32(),
        "encoder loaded"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = PoolingOptions {
        max_batch_tokens: args.max_batch_tokens,
        max_concurrent_requests: args.max_concurrent_embedding_requests,
        tokenizer_threads: cores,
        compute_threads: if args.encoder_threads == 0 {
            cores
        } else {
            args.encoder_threads
        },
        nice,
    };
    let handle =
        PoolingHandle::spawn(model_obj, tokenizer, info, &opts).map_err(LoadError::Spawn)?;
    Ok(StartedPooling {
        handle,
        name: name.unwrap_or(model).to_string(),
        root: files.name,
    })
}
