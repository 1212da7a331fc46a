//! The layers every decoder architecture composes: attention over the paged KV cache, the
//! gated MLP, the sparse mixture of experts, RMSNorm. An architecture file (e.g.
//! [`crate::llama`]) only says which of these it stacks, with which options, under which
//! tensor names.

pub mod attention;
pub mod mlp;
pub mod moe;
pub mod norm;

pub use attention::{Attention, AttentionSpec};
pub use mlp::{Activation, GatedMlp};
pub use moe::SparseMoe;
pub use norm::RmsNorm;
