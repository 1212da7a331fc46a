//! From configuration to a running engine: resolve the model, load weights and tokenizer,
//! size the KV cache, start the engine thread.

use crate::config::{CacheArgs, ModelArgs, SchedulerArgs, parse_bytes};
use crate::engine::{Engine, EngineConfig, EngineHandle};
use crate::scheduler::SchedulerConfig;
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device};
use indus_models::gguf::GgufFile;
use indus_models::{CausalLm, LoadFormat, LoadOptions, ModelConfig, ModelFiles, ModelSource};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Model(#[from] indus_models::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("invalid setting: {0}")]
    Config(String),
    #[error("device: {0}")]
    Device(#[from] candle_core::Error),
    #[error("cannot prepare the embedded model: {0}")]
    Embedded(std::io::Error),
    #[error("cannot start the engine thread: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Args(#[from] crate::config::ConflictingModels),
}

/// A loaded model with everything the engine and the API need to know about it.
pub struct LoadedModel {
    pub files: ModelFiles,
    pub model: CausalLm,
    pub tokenizer: Arc<Tokenizer>,
    /// Name shown by /v1/models unless --served-model-name is set.
    pub name: String,
    pub summary: ModelSummary,
}

/// What operators and /v1/models are told about the loaded weights.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSummary {
    pub name: String,
    /// Bytes the weights take in memory (quantized bytes where quantized).
    pub weight_bytes: usize,
    /// e.g. `gguf Q4_1+Q8_0`; `None` for dense weights.
    pub quantization: Option<String>,
    pub parameters: usize,
    pub dtype: String,
    /// The decoder family by its Hugging Face class, e.g. `Gemma3ForCausalLM`.
    pub architecture: &'static str,
}

/// The checkpoint's quantization, checked against `--quantization` (vLLM's flag: optional,
/// detected from config.json; given, it must name what the checkpoint holds, except `fp8`
/// on a dense checkpoint, which quantizes it at load as vLLM does).
fn checked_quantization(
    detected: Option<indus_models::QuantConfig>,
    flag: Option<&str>,
    config_path: &Path,
) -> Result<Option<indus_models::QuantConfig>, LoadError> {
    let Some(flag) = flag else {
        return Ok(detected);
    };
    let wanted: indus_models::QuantMethod = flag
        .parse()
        .map_err(|e| LoadError::Config(format!("--quantization: {e}")))?;
    match detected {
        Some(q) if q.method() == wanted => Ok(Some(q)),
        Some(q) => Err(LoadError::Config(format!(
            "--quantization {wanted} does not match the checkpoint: {} declares quant_method {}",
            config_path.display(),
            q.method()
        ))),
        None if wanted == indus_models::QuantMethod::Fp8 => Ok(Some(
            indus_models::QuantConfig::Fp8(indus_models::Fp8Config::at_load()),
        )),
        None => Err(LoadError::Config(format!(
            "--quantization {wanted}: {} has no quantization_config (the checkpoint is not {wanted}-quantized)",
            config_path.display()
        ))),
    }
}

pub fn parse_device(s: &str) -> Result<Device, LoadError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Ok(Device::new_cuda(n)?),
            None => Err(LoadError::Config(format!(
                "unknown device `{other}` (cpu, cuda, cuda:N)"
            ))),
        },
    }
}

pub fn parse_dtype(s: &str, device: &Device) -> Result<DType, LoadError> {
    Ok(match s {
        "auto" if device.is_cpu() => DType::F32,
        "auto" | "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" | "half" => DType::F16,
        "f32" | "float32" | "float" => DType::F32,
        other => {
            return Err(LoadError::Config(format!(
                "unknown dtype `{other}` (auto, f32, bf16, f16)"
            )));
        }
    })
}

/// Loads the model named by `args` (the embedded one when none is named).
pub fn load_model(args: &ModelArgs) -> Result<LoadedModel, LoadError> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype, &device)?;
    let format: LoadFormat = args.load_format.parse().map_err(LoadError::Config)?;
    let (source, name) = match args.model_name()? {
        Some(m) => (
            ModelSource::parse(m, args.revision.as_deref()),
            m.to_string(),
        ),
        None => (
            ModelSource::Local(crate::embedded::materialize().map_err(LoadError::Embedded)?),
            crate::embedded::NAME.to_string(),
        ),
    };
    let files = ModelFiles::resolve_with(
        &source,
        format != LoadFormat::Dummy,
        args.gguf_file.as_deref(),
    )?;
    let template = match &args.chat_template {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            LoadError::Config(format!("cannot read chat template {}: {e}", p.display()))
        })?),
        None => None,
    };
    let opts = LoadOptions {
        dtype,
        device,
        format,
        seed: args.seed,
        dequantize: args.dequantize,
    };
    let started = std::time::Instant::now();
    let (model, tokenizer) = match &files.gguf {
        Some(path) => {
            if format == LoadFormat::Dummy || format == LoadFormat::Safetensors {
                return Err(LoadError::Config(format!(
                    "{} is a GGUF file; --load-format {} does not apply",
                    path.display(),
                    args.load_format
                )));
            }
            if let Some(q) = &args.quantization {
                return Err(LoadError::Config(format!(
                    "{} is a GGUF file; --quantization {q} does not apply (GGUF block types are read from the file)",
                    path.display()
                )));
            }
            let file = Arc::new(GgufFile::open(path).map_err(indus_models::ModelError::from)?);
            let model = CausalLm::load_gguf(file.clone(), &opts)?;
            let tokenizer = match &args.tokenizer {
                Some(t) => tokenizer_override(t, &model.config().eos_token_ids, template)?,
                None => crate::tokenizer::gguf::from_gguf(&file, template)?,
            };
            (model, tokenizer)
        }
        None => {
            let config_path = files
                .config
                .as_ref()
                .ok_or_else(|| LoadError::Config(format!("{} has no config.json", files.name)))?;
            let config = ModelConfig::from_file(config_path)?;
            let tokenizer = match (&args.tokenizer, &files.tokenizer) {
                (Some(t), _) => tokenizer_override(t, &config.eos_token_ids, template)?,
                (None, Some(t)) => Tokenizer::from_files(
                    t,
                    files.tokenizer_config.as_deref(),
                    files.generation_config.as_deref(),
                    &config.eos_token_ids,
                    template,
                )?,
                (None, None) => {
                    return Err(LoadError::Config(format!(
                        "{} has no tokenizer.json; pass --tokenizer FILE",
                        files.name
                    )));
                }
            };
            // Dummy weights are dense whatever the config says; only fp8 quantizes them.
            let detected = if format == LoadFormat::Dummy {
                None
            } else {
                indus_models::QuantConfig::from_config_file(config_path)?
            };
            let quant = checked_quantization(detected, args.quantization.as_deref(), config_path)?;
            let model = CausalLm::load_with_quantization(config, quant, &files.weights, &opts)?;
            (model, tokenizer)
        }
    };
    let summary = ModelSummary {
        name: name.clone(),
        weight_bytes: model.weight_bytes(),
        quantization: model.quantization().map(|q| match files.gguf {
            Some(_) => format!("gguf {q}"),
            None => q,
        }),
        parameters: model.config().num_parameters(),
        dtype: format!("{:?}", model.dtype()).to_lowercase(),
        architecture: model.config().architecture.hf_class(),
    };
    tracing::info!(
        model = %name,
        dtype = ?dtype,
        params = summary.parameters,
        weight_mib = summary.weight_bytes as f64 / (1 << 20) as f64,
        quantization = summary.quantization.as_deref().unwrap_or("none"),
        context = model.config().max_context(),
        secs = started.elapsed().as_secs_f32(),
        "model loaded"
    );
    Ok(LoadedModel {
        files,
        model,
        tokenizer: Arc::new(tokenizer),
        name,
        summary,
    })
}

/// `--tokenizer`: a tokenizer.json, or a Hugging Face directory holding one (with its
/// tokenizer_config.json and generation_config.json, when present).
fn tokenizer_override(
    path: &Path,
    model_eos: &[u32],
    template: Option<String>,
) -> Result<Tokenizer, LoadError> {
    Ok(if path.is_dir() {
        Tokenizer::from_dir(path, model_eos, template)?
    } else {
        Tokenizer::from_files(path, None, None, model_eos, template)?
    })
}

/// The engine configuration for a loaded model and the cache/scheduler flags.
pub fn engine_config(
    model: &CausalLm,
    cache: &CacheArgs,
    sched: &SchedulerArgs,
    seed: u64,
) -> Result<EngineConfig, LoadError> {
    let cfg = model.config();
    let model_max = cfg.max_context();
    let max_model_len = sched.max_model_len.unwrap_or(model_max);
    if max_model_len > model_max {
        return Err(LoadError::Config(format!(
            "--max-model-len {max_model_len} exceeds the model's context of {model_max}"
        )));
    }
    if cache.block_size == 0 || cache.block_size > 256 {
        return Err(LoadError::Config("--block-size must be in 1..=256".into()));
    }
    if sched.no_enable_chunked_prefill && sched.max_num_batched_tokens < max_model_len {
        return Err(LoadError::Config(format!(
            "without chunked prefill, --max-num-batched-tokens ({}) must be at least --max-model-len ({max_model_len})",
            sched.max_num_batched_tokens
        )));
    }
    let block_bytes = indus_models::KvCache::block_bytes(cfg, cache.block_size, model.dtype());
    let needed_blocks = max_model_len.div_ceil(cache.block_size) * sched.max_num_seqs.max(1);
    let num_blocks = match cache.num_kv_blocks {
        Some(n) => n,
        None => {
            let budget = match &cache.kv_cache_memory {
                Some(s) => parse_bytes(s).map_err(LoadError::Config)?,
                None if model.device().is_cuda() => gpu_kv_budget(model, cache, sched)?,
                None => 512 << 20,
            };
            (budget / block_bytes).min(needed_blocks)
        }
    };
    let min_blocks = max_model_len.div_ceil(cache.block_size);
    if num_blocks < min_blocks {
        return Err(LoadError::Config(format!(
            "the KV cache ({num_blocks} blocks of {} tokens) cannot hold one {max_model_len}-token sequence; raise --kv-cache-memory or lower --max-model-len",
            cache.block_size
        )));
    }
    Ok(EngineConfig {
        block_size: cache.block_size,
        num_blocks,
        max_model_len,
        scheduler: SchedulerConfig {
            max_num_batched_tokens: sched.max_num_batched_tokens,
            max_num_seqs: sched.max_num_seqs,
            enable_chunked_prefill: !sched.no_enable_chunked_prefill,
        },
        enable_prefix_caching: !cache.no_enable_prefix_caching,
        max_waiting_requests: sched.max_waiting_requests.unwrap_or(usize::MAX),
        seed,
        fault_panic_at_step: std::env::var("INDUS_FAULT_PANIC_AT_STEP")
            .ok()
            .and_then(|v| v.parse().ok()),
        guided_threads: sched.guided_decoding_threads,
    })
}

/// Bytes of activations one step may need beyond weights and KV: the widest intermediate
/// tensors of a `max_num_batched_tokens` step plus the logits of `max_num_seqs` rows, in f32,
/// doubled for allocator slack.
fn activation_headroom(model: &CausalLm, sched: &SchedulerArgs) -> usize {
    let c = model.config();
    let per_token = 4 * c.hidden_size
        + 3 * c.intermediate_size
        + (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
    2 * 4 * (sched.max_num_batched_tokens * per_token + sched.max_num_seqs * c.vocab_size)
}

/// The KV budget on a GPU: `--gpu-memory-utilization` of the card, minus what is already in
/// use (the weights just loaded, other processes) and the activation headroom.
#[cfg(feature = "cuda")]
fn gpu_kv_budget(
    model: &CausalLm,
    cache: &CacheArgs,
    sched: &SchedulerArgs,
) -> Result<usize, LoadError> {
    use candle_core::cuda_backend::cudarc::driver::result::mem_get_info;
    if !(0.0..=1.0).contains(&cache.gpu_memory_utilization) {
        return Err(LoadError::Config(
            "--gpu-memory-utilization must be in (0, 1]".into(),
        ));
    }
    let cuda = model.device().as_cuda_device()?;
    cuda.cuda_stream()
        .context()
        .bind_to_thread()
        .map_err(|e| LoadError::Config(format!("CUDA context: {e}")))?;
    let (free, total) =
        mem_get_info().map_err(|e| LoadError::Config(format!("cudaMemGetInfo: {e}")))?;
    let allowed = (total as f64 * cache.gpu_memory_utilization) as usize;
    let used = total - free;
    let budget = allowed
        .saturating_sub(used)
        .saturating_sub(activation_headroom(model, sched));
    tracing::info!(
        total_gib = total as f64 / (1u64 << 30) as f64,
        used_gib = used as f64 / (1u64 << 30) as f64,
        kv_gib = budget as f64 / (1u64 << 30) as f64,
        "GPU memory plan"
    );
    Ok(budget)
}

#[cfg(not(feature = "cuda"))]
fn gpu_kv_budget(
    model: &CausalLm,
    _cache: &CacheArgs,
    sched: &SchedulerArgs,
) -> Result<usize, LoadError> {
    let _ = activation_headroom(model, sched);
    Err(LoadError::Config(
        "this build has no CUDA support (build with --features cuda)".into(),
    ))
}

/// Loads and starts: the common path of `serve`, `generate` and `bench`.
pub fn start_engine(
    model_args: &ModelArgs,
    cache: &CacheArgs,
    sched: &SchedulerArgs,
) -> Result<(EngineHandle, ModelSummary), LoadError> {
    let loaded = load_model(model_args)?;
    let config = engine_config(&loaded.model, cache, sched, model_args.seed)?;
    tracing::info!(
        kv_blocks = config.num_blocks,
        block_size = config.block_size,
        max_model_len = config.max_model_len,
        "KV cache sized"
    );
    let engine = Engine::new(loaded.model, loaded.tokenizer, config)?;
    let handle = EngineHandle::spawn(engine).map_err(LoadError::Spawn)?;
    Ok((handle, loaded.summary))
}

/// The fixture directory of the repository (tests and examples).
pub fn repo_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
