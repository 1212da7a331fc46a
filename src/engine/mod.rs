//! The engine: one OS thread owning the model, the KV cache and the scheduler. Requests come
//! in and outputs go out through channels; nothing else touches its state.

mod core;
pub mod detokenizer;
mod drain;
mod handle;
pub mod output;
pub mod request;
pub mod runner;
pub mod sampler;
mod stats;
mod tenant_load;

pub use core::{Engine, EngineConfig};
pub use handle::{
    CompletedChoice, CompletedRequest, EngineError, EngineHandle, EngineLimits, OutputStream,
};
pub use output::{FinishReason, RequestOutput, RequestTimes, StopReason, TokenLogprob};
pub use request::{Request, SamplingParams};
pub use stats::EngineStats;
