//! Indus compute kernels, exposed as candle custom ops.
//!
//! Every op here has a CPU implementation written plainly over slices: it is both the CPU
//! execution path (the whole engine runs on CPU in CI) and the reference the CUDA kernels are
//! checked against. The CUDA implementations (feature `cuda`) swap the kernel, never the
//! semantics or the memory layout described in [`kv_layout`].

pub mod activation;
pub mod amx;
pub mod block_matmul;
pub mod cache_write;
pub mod candidate_weights;
pub mod check;
#[cfg(feature = "cuda")]
pub mod cuda;
mod disjoint;
mod elem;
pub mod encoder_attention;
pub mod fma_exp;
pub mod gelu;
pub mod int4_matmul;
pub mod kv_layout;
pub mod layer_norm;
pub mod metadata;
pub mod moe;
pub mod norm;
pub mod paged_attention;
pub mod rotary;
pub mod sampling;
pub mod shared;
mod uninit;

pub use activation::silu_mul;
pub use cache_write::{write_kv_cache, write_step_kv_cache};
pub use kv_layout::KvCacheShape;
pub use metadata::AttentionMetadata;
pub use moe::{
    ExpertWeights, MoePath, MoePlan, fused_moe, fused_moe_reference, fused_moe_with, route_top_k,
};
pub use norm::{fused_add_rms_norm, rms_norm};
pub use paged_attention::{
    AttentionVariant, PagedAttentionOptions, paged_attention, paged_attention_variant,
    paged_attention_with,
};
pub use rotary::apply_rotary;
pub use sampling::SamplingRow;
