use std::path::PathBuf;

/// Everything that can go wrong between a model name and a ready model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file not found: {0}")]
    MissingFile(PathBuf),
    #[error(
        "model `{model}` has no safetensors weights (looked for model.safetensors and model.safetensors.index.json in {dir})"
    )]
    NoWeights { model: String, dir: PathBuf },
    #[error(
        "unsupported architecture {0:?}; supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"
    )]
    UnsupportedArchitecture(Vec<String>),
    #[error("invalid config {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("unsupported quantization in {path}: {reason}")]
    Quantization { path: PathBuf, reason: String },
    #[error("weight `{name}`: {reason}")]
    Weight { name: String, reason: String },
    #[error("hub download of `{model}` failed: {reason}")]
    Hub { model: String, reason: String },
    #[error(
        "`{model}` is not a local directory and is not in the hub cache (HF_HUB_OFFLINE is set)"
    )]
    OfflineMiss { model: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
