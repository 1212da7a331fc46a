//! `indus serve` flags: the model, cache and scheduler flags shared with `generate`, plus the
//! HTTP server's own. Every flag can also come from an `INDUS_*` environment variable.

use crate::config::{CacheArgs, ModelArgs, PoolingArgs, SchedulerArgs, parse_bytes};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Serve /metrics on this port (on --host) instead of the API port, without a key;
    /// the API port then has no /metrics. Without it, /metrics on the API port needs a key
    /// when keys are set.
    #[arg(long, env = "INDUS_METRICS_PORT")]
    pub metrics_port: Option<u16>,
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
    /// TOML or JSON file of named keys: `[[keys]] name = "team-a" key = "sk-..." models = ["m"]`,
    /// optionally with quotas: `requests_per_minute`, `tokens_per_minute`,
    /// `max_concurrent_requests`, `daily_token_budget` (see docs/server.md).
    #[arg(long, env = "INDUS_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Directory for state kept across restarts: the keys' daily token usage
    /// (`quota-state.json`, replaced atomically). Without it daily budgets restart from zero.
    #[arg(long, env = "INDUS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT (new requests get 503
    /// meanwhile); those still running then are cut (a stream ends with an error event).
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
    /// Seconds a client has to send a whole request head, from its first byte (the
    /// connection is closed after).
    #[arg(long, default_value = "10", value_parser = parse_secs, env = "INDUS_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Duration,
    /// Seconds a client has to send a whole request body once its head is in (408 after).
    #[arg(long, default_value = "30", value_parser = parse_secs, env = "INDUS_HTTP_BODY_TIMEOUT")]
    pub http_body_timeout: Duration,
    /// Seconds a connection may stay open without a request in progress (before its first
    /// request, and between requests).
    #[arg(long, default_value = "15", value_parser = parse_secs, env = "INDUS_HTTP_KEEP_ALIVE_TIMEOUT")]
    pub http_keep_alive_timeout: Duration,
    /// Open connections at most (lowered to what the open-file limit allows). At the cap the
    /// longest-idle connection is closed for a new one; when all serve requests, new ones get
    /// a 503.
    #[arg(long, default_value_t = 2048, env = "INDUS_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Prompts one /v1/completions request may carry (400 beyond).
    #[arg(long, default_value_t = 128, env = "INDUS_MAX_PROMPTS_PER_REQUEST")]
    pub max_prompts_per_request: usize,
    /// Largest `n` (choices per prompt) a request may ask for (400 beyond); prompts × n is
    /// also capped by --max-num-seqs.
    #[arg(long, default_value_t = 128, env = "INDUS_MAX_N")]
    pub max_n: usize,
    /// How tool calls are read out of generated text, as vLLM names its parsers: `hermes`
    /// (`<tool_call>` JSON: Qwen2.5/Qwen3, Hermes, templates/tool_chat_hermes.jinja),
    /// `llama3_json` or `mistral`. Default: judged from the chat template; with neither,
    /// `tool_choice: auto` is refused (`required` and named functions still work).
    #[arg(long, env = "INDUS_TOOL_CALL_PARSER")]
    pub tool_call_parser: Option<crate::tools::ToolCallFormat>,
    /// Only 1 is supported today (accepted for compatibility with vllm serve and the Helm chart).
    #[arg(long, default_value_t = 1, env = "INDUS_TENSOR_PARALLEL_SIZE")]
    pub tensor_parallel_size: usize,
}

/// Seconds, possibly fractional (`0.5`), as a duration; at least one millisecond.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.001..=86_400.0 * 365.0).contains(&v) {
        return Err(format!("`{s}` seconds is out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_secs("0.25").unwrap(), Duration::from_millis(250));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("x").is_err());
    }
}
