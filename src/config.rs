//! Command-line configuration: one struct per concern, each flag one field, each readable
//! from an `INDUS_*` environment variable (what a Helm chart sets).

use clap::Args;

/// Which model to load and how.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Local model directory, `.gguf` file or Hugging Face hub id; the embedded tiny test
    /// model if omitted.
    #[arg(env = "INDUS_MODEL")]
    pub model: Option<String>,
    /// The model, as a flag (the same as the positional MODEL, as in `vllm serve --model`).
    #[arg(long = "model", id = "model_flag", value_name = "MODEL")]
    pub model_flag: Option<String>,
    /// Hub revision (branch, tag or commit).
    #[arg(long, env = "INDUS_REVISION")]
    pub revision: Option<String>,
    /// auto (bf16 on GPU, f32 on CPU), f32, bf16, f16.
    #[arg(long, default_value = "auto", env = "INDUS_DTYPE")]
    pub dtype: String,
    /// auto|safetensors|gguf|dummy (random weights of the config's shapes, for benchmarks).
    #[arg(long, default_value = "auto", env = "INDUS_LOAD_FORMAT")]
    pub load_format: String,
    /// The `.gguf` file to use from a directory or hub repo holding several.
    #[arg(long, env = "INDUS_GGUF_FILE")]
    pub gguf_file: Option<String>,
    /// tokenizer.json (or a directory holding one) overriding the model's tokenizer.
    #[arg(long, env = "INDUS_TOKENIZER")]
    pub tokenizer: Option<std::path::PathBuf>,
    /// Load quantized weights (GGUF, GPTQ, AWQ, FP8) as dense weights of --dtype.
    #[arg(long, env = "INDUS_DEQUANTIZE")]
    pub dequantize: bool,
    /// gptq|awq|fp8|compressed-tensors: the checkpoint's quantization, as vLLM's flag;
    /// detected from config.json's `quantization_config` when omitted (given, it must
    /// match). `fp8` on a dense checkpoint (or dummy weights) quantizes it at load: E4M3
    /// weights with a scale per output row, activations per token.
    #[arg(long, env = "INDUS_QUANTIZATION")]
    pub quantization: Option<String>,
    /// Jinja chat template file overriding the model's.
    #[arg(long, env = "INDUS_CHAT_TEMPLATE")]
    pub chat_template: Option<std::path::PathBuf>,
    /// cpu, or cuda / cuda:N.
    #[arg(long, default_value = "cpu", env = "INDUS_DEVICE")]
    pub device: String,
    /// Seed for dummy weights and for requests that give no seed.
    #[arg(long, default_value_t = 0, env = "INDUS_SEED")]
    pub seed: u64,
}

/// The model was named twice, positionally and with `--model`, differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("two different models given: `{positional}` and `--model {flag}`; name the model once")]
pub struct ConflictingModels {
    pub positional: String,
    pub flag: String,
}

/// The one model named by a positional argument and/or `--model`: the same name twice is
/// fine, two different ones an error.
pub fn one_model_name<'a>(
    positional: Option<&'a str>,
    flag: Option<&'a str>,
) -> Result<Option<&'a str>, ConflictingModels> {
    match (positional, flag) {
        (Some(p), Some(f)) if p != f => Err(ConflictingModels {
            positional: p.to_string(),
            flag: f.to_string(),
        }),
        (p, f) => Ok(p.or(f)),
    }
}

impl ModelArgs {
    /// The model named by the positional MODEL or `--model` (`None`: the embedded one).
    pub fn model_name(&self) -> Result<Option<&str>, ConflictingModels> {
        one_model_name(self.model.as_deref(), self.model_flag.as_deref())
    }
}

/// The paged KV cache.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16, env = "INDUS_BLOCK_SIZE")]
    pub block_size: usize,
    /// KV-cache budget, e.g. 512MiB or 8GiB (on CPU; default 512MiB, capped at what
    /// max-num-seqs full-length sequences need).
    #[arg(long, env = "INDUS_KV_CACHE_MEMORY")]
    pub kv_cache_memory: Option<String>,
    /// Exact number of KV blocks (overrides the memory budget; for tests and tuning).
    #[arg(long, env = "INDUS_NUM_KV_BLOCKS")]
    pub num_kv_blocks: Option<usize>,
    /// Fraction of GPU memory for weights + KV cache (GPU only).
    #[arg(long, default_value_t = 0.9, env = "INDUS_GPU_MEMORY_UTILIZATION")]
    pub gpu_memory_utilization: f64,
    /// Disable reuse of cached prefix blocks.
    #[arg(long, env = "INDUS_NO_ENABLE_PREFIX_CACHING")]
    pub no_enable_prefix_caching: bool,
}

/// Continuous batching.
#[derive(Debug, Clone, Args)]
pub struct SchedulerArgs {
    /// Longest prompt + completion (default: the model's context).
    #[arg(long, env = "INDUS_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,
    /// Most sequences in one step.
    #[arg(long, default_value_t = 256, env = "INDUS_MAX_NUM_SEQS")]
    pub max_num_seqs: usize,
    /// Token budget of one step (prefill chunks + decodes).
    #[arg(long, default_value_t = 2048, env = "INDUS_MAX_NUM_BATCHED_TOKENS")]
    pub max_num_batched_tokens: usize,
    /// Prefill each prompt in one step (needs max-num-batched-tokens >= max-model-len).
    #[arg(long, env = "INDUS_NO_ENABLE_CHUNKED_PREFILL")]
    pub no_enable_chunked_prefill: bool,
    /// Requests waiting to start beyond which new ones get 429.
    #[arg(long, env = "INDUS_MAX_WAITING_REQUESTS")]
    pub max_waiting_requests: Option<usize>,
    /// Threads computing structured-output masks while the forward pass runs (0: one per
    /// core, at most 8).
    #[arg(long, default_value_t = 0, env = "INDUS_GUIDED_DECODING_THREADS")]
    pub guided_decoding_threads: usize,
}

/// Parses sizes like `512MiB`, `8GiB`, `1.5GB`, `1048576`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().map_err(|_| format!("invalid size `{s}`"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit `{other}`")),
    };
    Ok((num * mult) as usize)
}

#[cfg(test)]
mod tests {
    use super::ModelArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    fn name(argv: &[&str]) -> Result<Option<String>, String> {
        let cli = Cli::try_parse_from(std::iter::once("indus").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.model
            .model_name()
            .map(|m| m.map(str::to_string))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn model_given_once_or_twice_alike() {
        assert_eq!(name(&["m1"]), Ok(Some("m1".into())));
        assert_eq!(name(&["--model", "m1"]), Ok(Some("m1".into())));
        assert_eq!(
            name(&["--model=m1", "--dtype", "f32"]),
            Ok(Some("m1".into()))
        );
        assert_eq!(name(&["m1", "--model", "m1"]), Ok(Some("m1".into())));
        let err = name(&["m1", "--model", "m2"]).unwrap_err();
        assert!(err.contains("m1") && err.contains("m2"), "{err}");
        // Twice as a flag is clap's error, not a silent pick.
        assert!(name(&["--model", "m1", "--model", "m2"]).is_err());
    }

    #[test]
    fn encoder_nice_defaults_to_19_and_stays_in_range() {
        #[derive(Parser)]
        struct Pooling {
            #[command(flatten)]
            pooling: super::PoolingArgs,
        }
        let parse = |argv: &[&str]| {
            Pooling::try_parse_from(std::iter::once("indus").chain(argv.iter().copied()))
                .map(|p| p.pooling.encoder_nice)
        };
        assert_eq!(parse(&[]).ok(), Some(19));
        assert_eq!(parse(&["--encoder-nice", "5"]).ok(), Some(5));
        assert!(parse(&["--encoder-nice", "20"]).is_err());
        assert!(parse(&["--encoder-nice", "-1"]).is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(super::parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(super::parse_bytes("1.5GB"), Ok(1_500_000_000));
        assert_eq!(super::parse_bytes("4096"), Ok(4096));
        assert!(super::parse_bytes("12XB").is_err());
    }
}

/// Encoder models served beside (or instead of) the chat model: embeddings and rerankers.
#[derive(Debug, Clone, Args)]
pub struct PoolingArgs {
    /// An embedding or reranker model (directory or hub id) to serve beside the chat
    /// model (repeatable); served under its name, or `NAME=MODEL` to pick the name.
    #[arg(
        long = "embedding-model",
        env = "INDUS_EMBEDDING_MODELS",
        value_delimiter = ','
    )]
    pub embedding_models: Vec<String>,
    /// Padded tokens (inputs × longest input) per encoder forward batch, as TEI's flag.
    #[arg(long, default_value_t = 16384, env = "INDUS_MAX_BATCH_TOKENS")]
    pub max_batch_tokens: usize,
    /// Inputs one /v1/embeddings or /v1/rerank request may carry (400 beyond), as TEI's flag.
    #[arg(long, default_value_t = 2048, env = "INDUS_MAX_CLIENT_BATCH_SIZE")]
    pub max_client_batch_size: usize,
    /// Embedding/rerank requests in flight per model (429 beyond).
    #[arg(
        long,
        default_value_t = 512,
        env = "INDUS_MAX_CONCURRENT_EMBEDDING_REQUESTS"
    )]
    pub max_concurrent_embedding_requests: usize,
    /// Compute threads per encoder model (0: one per CPU core).
    #[arg(long, default_value_t = 0, env = "INDUS_ENCODER_THREADS")]
    pub encoder_threads: usize,
    /// Niceness of the encoder threads (Linux) while a chat model also runs on the CPU:
    /// 19 keeps an embedding flood off chat decoding (encoders get the cores chat leaves
    /// idle); lower values give embeddings a larger share of busy cores.
    #[arg(long, default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19),
          env = "INDUS_ENCODER_NICE")]
    pub encoder_nice: i32,
}
