//! The OpenAI-compatible API: wire types and the handlers that translate them to engine
//! requests.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod logprobs;
pub mod models;
pub mod params;
pub mod pooling;
pub mod rerank;
pub mod shapes;
pub mod structured;
pub mod tokenize;
pub mod tools;
pub mod types;
