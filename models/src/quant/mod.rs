//! Quantized checkpoints. [`config`] reads config.json's `quantization_config`.
//!
//! - Int4 weight-only (W4A16): GPTQ and AWQ. [`gptq`] and [`awq`] read each format's packed
//!   tensors into the one in-memory layout of [`int4`], which [`crate::Linear::Int4`] keeps
//!   and computes with.
//! - FP8 (E4M3): compressed-tensors and vLLM-style checkpoints ([`fp8_config`]), or a dense
//!   checkpoint quantized at load; [`fp8`] holds the weights and the W8A8 reference matmul
//!   behind [`crate::Linear::Fp8`].

pub mod awq;
pub mod config;
pub mod fp8;
pub mod fp8_config;
pub mod gptq;
pub mod int4;
pub mod pack;

pub use config::{Int4Config, QuantConfig, QuantMethod};
pub use fp8::Fp8Weight;
pub use fp8_config::{Fp8Activations, Fp8Config, Fp8Weights};
pub use int4::Int4Weight;
