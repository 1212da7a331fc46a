//! Indus models: finding a checkpoint (local directory or Hugging Face hub), reading its
//! config and weights (safetensors via mmap, or random `dummy` weights of the real shape), and
//! the decoder architectures, each composed from the shared layers of [`layers`].

pub mod causal_lm;
pub mod config;
pub mod encoder;
pub mod error;
pub mod files;
pub mod gemma;
pub mod gguf;
pub mod kv_cache;
pub mod layers;
pub mod linear;
pub mod llama;
pub mod quant;
pub mod rope;
pub mod weights;

pub use causal_lm::{CausalLm, StepInput};
pub use config::{Architecture, GemmaOptions, ModelConfig, RopeScaling};
pub use error::ModelError;
pub use files::{ModelFiles, ModelSource};
pub use kv_cache::KvCache;
pub use linear::{Embedding, Linear};
pub use quant::{Fp8Config, QuantConfig, QuantMethod};
pub use weights::{LoadFormat, LoadOptions};

pub type Result<T> = std::result::Result<T, ModelError>;
