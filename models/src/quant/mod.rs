//! Int4 weight-only checkpoints (W4A16): GPTQ and AWQ. [`config`] reads config.json's
//! `quantization_config`; [`gptq`] and [`awq`] read each format's packed tensors into the one
//! in-memory layout of [`int4`], which [`crate::Linear::Int4`] keeps and computes with.

pub mod awq;
pub mod config;
pub mod gptq;
pub mod int4;
pub mod pack;

pub use config::{QuantConfig, QuantMethod};
pub use int4::Int4Weight;
