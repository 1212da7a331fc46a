//! The GPU check (`indus-gpu-check`, scripts/gpu-check.sh): every op on a device against its CPU reference.
//!
//! Everything but the timings lives here, device-generic, so that it runs and is unit-tested without a GPU:
//! - [`metrics`]: the comparison (whole output and worst row), tolerances, results and the run's verdict;
//! - [`inputs`]: deterministic inputs, including the hostile ones (poisoned cache slots, large scores, a dominant
//!   key, small RMSNorm rows, odd sizes and block sizes, sampling rows with ties, infinities and NaNs);
//! - [`suite`]: the checks themselves, on any [`candle_core::Device`]. On the CPU the "device" side is the CPU op
//!   itself in the storage dtype, so a CPU run checks that the suite's plumbing works and that its tolerances
//!   accept a correct bf16/f16 computation, in every case, before any GPU time is spent.
//!
//! The binary only opens the GPU, runs [`suite::run`], adds the timings and turns the [`metrics::Verdict`] into an
//! exit status.

pub mod inputs;
pub mod metrics;
pub mod suite;

pub use inputs::{
    AttentionCase, AttentionInputs, Int4Inputs, ScoreRegime, SeqSpec, decode_attention_bytes,
    prefill_attention_flops,
};
pub use metrics::{
    CheckResult, Comparison, Rng, Tolerance, Verdict, compare, max_abs_diff, mismatches_exact,
    rel_l2, results_table, tolerance,
};
