//! Indus: an on-premise LLM inference serving runtime.

pub mod bench;
pub mod config;
pub mod embed;
pub mod embedded;
pub mod engine;
pub mod guided;
pub mod kv;
pub mod loader;
pub mod scheduler;
pub mod server;
pub mod tokenizer;
pub mod tools;
