//! GGUF checkpoints (llama.cpp, Ollama and LM Studio exports): the container, the model config
//! its metadata gives, and its tensors in our layout. The tokenizer it carries is built in the
//! server crate (`src/tokenizer/gguf.rs`), which owns tokenization.

pub mod arch;
pub mod reader;
pub mod weights;

pub use arch::{config_from_gguf, gguf_name};
pub use reader::{GgufError, GgufFile, MetaValue, TensorInfo};
