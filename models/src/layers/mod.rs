//! The layers every decoder architecture composes: attention over the paged KV cache, the
//! gated MLP, RMSNorm. An architecture file (e.g. [`crate::llama`]) only says which of these
//! it stacks, with which options, under which tensor names.

pub mod attention;
pub mod mlp;
pub mod norm;

pub use attention::{Attention, AttentionSpec};
pub use mlp::{Activation, GatedMlp};
pub use norm::RmsNorm;
