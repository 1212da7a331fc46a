//! `indus serve` flags: the model, cache and scheduler flags shared with `generate`, plus the
//! HTTP server's own. Every flag can also come from an `INDUS_*` environment variable.

use crate::config::{CacheArgs, ModelArgs, PoolingArgs, SchedulerArgs, parse_bytes};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub sched: SchedulerArgs,
    #[command(flatten)]
    pub pooling: PoolingArgs,
    /// What MODEL serves: `generate` (chat and completions), `embed` (a decoder embedding
    /// model, e.g. Qwen3-Embedding: last-token pooling through the paged engine), or `auto`
    /// (`embed` for a sentence-transformers decoder checkpoint, else `generate`). Encoder
    /// checkpoints (BERT, XLM-R) are recognised whatever this says.
    #[arg(long, default_value = "auto", env = "INDUS_TASK")]
    pub task: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "INDUS_HOST")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the "ready" log line says which).
    #[arg(long, default_value_t = 8000, env = "INDUS_PORT")]
    pub port: u16,
    /// Name clients use for the model (repeatable; the first is reported in responses).
    /// Default: the MODEL argument, or the embedded model's name.
    #[arg(long, env = "INDUS_SERVED_MODEL_NAME", value_delimiter = ',')]
    pub served_model_name: Vec<String>,
    /// Bearer key clients must send (repeatable). With none (and no keys file) the API is open.
    #[arg(
        long = "api-key",
        env = "INDUS_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// TOML or JSON file of named keys: `[[keys]] name = "team-a" key = "sk-..." models = ["m"]`.
    #[arg(long, env = "INDUS_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30, env = "INDUS_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: u64,
    /// Append one JSON line per request to this file (no prompt or completion text unless
    /// --audit-log-content).
    #[arg(long, env = "INDUS_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Also record prompts and completions in the audit log.
    #[arg(long, env = "INDUS_AUDIT_LOG_CONTENT")]
    pub audit_log_content: bool,
    /// Largest request body accepted (413 beyond), e.g. 4MiB.
    #[arg(long, default_value = "4MiB", value_parser = parse_bytes, env = "INDUS_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: usize,
    /// Only 1 is supported today (accepted for compatibility with vllm serve and the Helm chart).
    #[arg(long, default_value_t = 1, env = "INDUS_TENSOR_PARALLEL_SIZE")]
    pub tensor_parallel_size: usize,
}
