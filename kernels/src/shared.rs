//! Constants the Rust side and the CUDA kernels must agree on, defined once, here.
//!
//! Why one place: a thread count or tile size written twice (a `const` in Rust for the launch, a `constexpr` in a
//! `.cu` file for the kernel) drifts the day one of them is edited, and the result is a kernel indexing past its
//! shared memory, not a compile error. So build.rs includes this very file (`#[path]`) and writes
//! `indus_shared.cuh` into OUT_DIR from it ([`cuda_header`]); the `.cu` files include that header (nvcc gets
//! `-I $OUT_DIR`) and the Rust launches use the constants directly. The same goes for the coefficients of the
//! sampler's exp ([`crate::fma_exp`]): the host and the device evaluate one formula with one set of constants.
//!
//! This file must compile on its own (build.rs has no access to the crate's dependencies): no `use` of anything
//! outside `core`/`std`.

/// Warps of one decode/general attention CTA (`paged_attention_decode_*`).
pub const DECODE_WARPS: u32 = 4;
/// Threads of one decode/general attention CTA; the kernel's `__launch_bounds__` and its reductions assume it.
pub const DECODE_THREADS: u32 = DECODE_WARPS * 32;
/// Query tokens per CTA of the tensor-core prefill kernel.
pub const PREFILL_BM: usize = 64;
/// Keys per tile of the tensor-core prefill kernel.
pub const PREFILL_BN: usize = 64;
/// Warps of one prefill CTA: each owns 16 query rows (one `mma.m16n8k16` row block), so `PREFILL_WARPS * 16`
/// must equal [`PREFILL_BM`] (asserted at compile time on both sides).
pub const PREFILL_WARPS: u32 = 4;
pub const PREFILL_THREADS: u32 = PREFILL_WARPS * 32;
/// Threads of one sampling CTA (one CTA per row of logits).
pub const SAMPLE_THREADS: u32 = 1024;
/// Bytes of one row of sampling parameters as the kernel reads it (`struct KernelRow` in sampling.cu,
/// `sampling::KernelRow` in Rust); both sides assert it.
pub const SAMPLING_ROW_BYTES: usize = 24;
/// Head sizes with a decode/general kernel instance, and with a tensor-core prefill instance.
pub const DECODE_HEAD_SIZES: [usize; 3] = [64, 128, 256];
pub const PREFILL_HEAD_SIZES: [usize; 2] = [64, 128];
/// Query heads per decode CTA that have a kernel instance (`_g1` ... `_g8`); the plan picks the smallest that
/// covers the GQA group, capped at the last.
pub const DECODE_GROUPS: [usize; 4] = [1, 2, 4, 8];

/// Output columns per CTA of the int4 (W4A16) small-batch kernel, one per thread.
pub const INT4_THREADS: u32 = 128;
/// Inputs (K) per CTA of the int4 small-batch kernel: its split-K slice, a multiple of 8 (one packed word).
pub const INT4_K_CHUNK: usize = 256;
/// Rows (M) per launch of the int4 small-batch kernel, with an instance per tile size; above the last, the
/// weight is dequantized and multiplied by cuBLAS.
pub const INT4_M_TILES: [usize; 5] = [1, 2, 4, 8, 16];

/// Output tile of the grouped MoE GEMMs (kernels/cuda/moe.cu): slots (token choices) by columns, the K depth
/// staged per step, and threads per CTA (16 along N, the rest along M).
pub const MOE_BM: usize = 32;
pub const MOE_BN: usize = 64;
pub const MOE_BK: usize = 32;
pub const MOE_THREADS: u32 = 256;

const _: () = assert!(INT4_K_CHUNK.is_multiple_of(8));
const _: () =
    assert!(MOE_BM.is_multiple_of(MOE_THREADS as usize / 16) && MOE_BN.is_multiple_of(16));
const _: () = assert!(PREFILL_WARPS as usize * 16 == PREFILL_BM);
// The Q tile is staged through the K tile's shared memory.
const _: () = assert!(PREFILL_BM <= PREFILL_BN);

// --------------------------------------------------------------------------------------------- the sampler's exp
// exp(x) = 2^k * p(r), k = round(x * log2(e)), r = x - k * ln2 (Cody-Waite, two constants, fused), p a degree-7
// polynomial on |r| <= ln2 / 2 (Cephes expf's coefficients). See crate::fma_exp for the full specification.

/// log2(e), rounded to f32.
pub const EXP_LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: `fma(x, log2e, S) - S` rounds `x * log2e` to the nearest integer (ties to even) exactly.
pub const EXP_SHIFTER: f32 = 12_582_912.0;
/// ln2 = LN2_HI + LN2_LO: the f32 nearest ln2, and the f32 nearest the remainder.
pub const EXP_LN2_HI: f32 = f32::from_bits(0x3f31_7218);
pub const EXP_LN2_LO: f32 = f32::from_bits(0xb102_e308);
/// Inputs are clamped to [X_MIN, X_MAX] before the reduction (k stays in [-150, 128], no integer overflow).
pub const EXP_X_MIN: f32 = -104.0;
pub const EXP_X_MAX: f32 = 89.0;
/// Below 2^K_MIN the result is 0 (never a subnormal, so flush-to-zero modes cannot change it).
pub const EXP_K_MIN: i32 = -125;
/// p(r) = 1 + r + r^2 * (C2 + C3 r + C4 r^2 + C5 r^3 + C6 r^4 + C7 r^5), evaluated by Horner's rule in fused
/// multiply-adds down to the two final `fma(p, r, 1)` steps.
/// (Cephes' 5.0000001201e-1 is 0.5 in f32.)
pub const EXP_C2: f32 = 0.5;
pub const EXP_C3: f32 = 1.666_666_5e-1;
pub const EXP_C4: f32 = 4.166_579_6e-2;
pub const EXP_C5: f32 = 8.333_452e-3;
pub const EXP_C6: f32 = 1.398_199_9e-3;
pub const EXP_C7: f32 = 1.987_569_1e-4;

/// An f32 as an exact C hexadecimal floating literal (`0x1.62e430p-1f`), so the header carries the very bits.
pub fn c_float_literal(v: f32) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() {
            "(-0.0f)"
        } else {
            "0.0f"
        }
        .to_string();
    }
    assert!(v.is_finite(), "constant {v} is not finite");
    let bits = v.to_bits();
    let sign = if bits >> 31 == 1 { "-" } else { "" };
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    let s = if exp == 0 {
        // Subnormal: 0x0.mmmmmmp-126.
        format!("{sign}0x0.{:06x}p-126f", mant << 1)
    } else {
        format!("{sign}0x1.{:06x}p{}f", mant << 1, exp - 127)
    };
    format!("({s})")
}

/// The text of `indus_shared.cuh` (build.rs writes it to OUT_DIR; the host-C test of the exp writes it to a
/// temporary directory). Plain C preprocessor definitions, so the header compiles as C, C++ and CUDA.
pub fn cuda_header() -> String {
    let mut h = String::from(
        "// @generated by kernels/build.rs from kernels/src/shared.rs -- edit that file, not this one.\n\
         // Constants shared by the Rust launches and the CUDA kernels.\n\
         #pragma once\n",
    );
    let mut def = |name: &str, value: String| h.push_str(&format!("#define {name} {value}\n"));
    def("INDUS_DECODE_WARPS", DECODE_WARPS.to_string());
    def("INDUS_DECODE_THREADS", DECODE_THREADS.to_string());
    def("INDUS_PREFILL_BM", PREFILL_BM.to_string());
    def("INDUS_PREFILL_BN", PREFILL_BN.to_string());
    def("INDUS_PREFILL_WARPS", PREFILL_WARPS.to_string());
    def("INDUS_PREFILL_THREADS", PREFILL_THREADS.to_string());
    def("INDUS_SAMPLE_THREADS", SAMPLE_THREADS.to_string());
    def("INDUS_SAMPLING_ROW_BYTES", SAMPLING_ROW_BYTES.to_string());
    def("INDUS_INT4_THREADS", INT4_THREADS.to_string());
    def("INDUS_INT4_K_CHUNK", INT4_K_CHUNK.to_string());
    def("INDUS_MOE_BM", MOE_BM.to_string());
    def("INDUS_MOE_BN", MOE_BN.to_string());
    def("INDUS_MOE_BK", MOE_BK.to_string());
    def("INDUS_MOE_THREADS", MOE_THREADS.to_string());
    // X-macros over the kernel instances: M(args..., value) for each value.
    let xmacro = |values: &[usize]| -> String {
        values
            .iter()
            .map(|v| format!("M(__VA_ARGS__, {v})"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    def(
        "INDUS_FOR_EACH_DECODE_HEAD_SIZE(M, ...)",
        xmacro(&DECODE_HEAD_SIZES),
    );
    def(
        "INDUS_FOR_EACH_PREFILL_HEAD_SIZE(M, ...)",
        xmacro(&PREFILL_HEAD_SIZES),
    );
    def(
        "INDUS_FOR_EACH_DECODE_GROUP(M, ...)",
        xmacro(&DECODE_GROUPS),
    );
    def("INDUS_FOR_EACH_INT4_M_TILE(M, ...)", xmacro(&INT4_M_TILES));
    def("INDUS_EXP_LOG2E", c_float_literal(EXP_LOG2E));
    def("INDUS_EXP_SHIFTER", c_float_literal(EXP_SHIFTER));
    def("INDUS_EXP_NEG_LN2_HI", c_float_literal(-EXP_LN2_HI));
    def("INDUS_EXP_NEG_LN2_LO", c_float_literal(-EXP_LN2_LO));
    def("INDUS_EXP_X_MIN", c_float_literal(EXP_X_MIN));
    def("INDUS_EXP_X_MAX", c_float_literal(EXP_X_MAX));
    def("INDUS_EXP_K_MIN", format!("({EXP_K_MIN})"));
    for (i, c) in [EXP_C2, EXP_C3, EXP_C4, EXP_C5, EXP_C6, EXP_C7]
        .iter()
        .enumerate()
    {
        def(&format!("INDUS_EXP_C{}", i + 2), c_float_literal(*c));
    }
    h
}
