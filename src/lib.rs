//! Indus: an on-premise LLM inference serving runtime.

pub mod kv;
pub mod scheduler;
pub mod tokenizer;
pub mod engine;
