//! Indus models: finding a checkpoint (local directory or Hugging Face hub), reading its
//! config and weights (safetensors via mmap, or random `dummy` weights of the real shape), and
//! the Llama-family decoder written once against the paged-attention kernels.

pub mod config;
pub mod encoder;
pub mod error;
pub mod files;
pub mod gguf;
pub mod kv_cache;
pub mod linear;
pub mod llama;
pub mod rope;
pub mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::ModelError;
pub use files::{ModelFiles, ModelSource};
pub use kv_cache::KvCache;
pub use linear::{Embedding, Linear};
pub use llama::{CausalLm, StepInput};
pub use weights::{LoadFormat, LoadOptions};

pub type Result<T> = std::result::Result<T, ModelError>;
