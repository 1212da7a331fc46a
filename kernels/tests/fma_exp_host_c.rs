//! The device's exp, compiled as host C, returns the same bits as the host's `exp_fma` on 10^6 inputs.
//!
//! kernels/cuda/fma_exp.cuh is the very file sampling.cu includes; it is written in the common subset of C11 and
//! CUDA C++ so that this test compiles it with the machine's C compiler (`$CC`, else `cc`, `gcc`, `clang`: the
//! Rust toolchain links through one, so one is always there) against the header build.rs generates from
//! kernels/src/shared.rs. Why host bits are device bits is argued in kernels/src/fma_exp.rs; indus-gpu-check
//! checks the same inputs on a GPU.

use indus_kernels::fma_exp::{exp_fma, exp_test_inputs};
use std::path::{Path, PathBuf};
use std::process::Command;

const DRIVER: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "fma_exp.cuh"

/* Reads f32 inputs from argv[1], writes indus_exp of each to argv[2]; prints the constants' bits first. */
int main(int argc, char** argv) {
  if (argc != 3) return 2;
  FILE* in = fopen(argv[1], "rb");
  if (!in) return 3;
  fseek(in, 0, SEEK_END);
  long bytes = ftell(in);
  fseek(in, 0, SEEK_SET);
  size_t n = (size_t)bytes / sizeof(float);
  float* x = (float*)malloc(n * sizeof(float));
  float* y = (float*)malloc(n * sizeof(float));
  if (!x || !y || fread(x, sizeof(float), n, in) != n) return 4;
  fclose(in);
  for (size_t i = 0; i < n; ++i) y[i] = indus_exp(x[i]);
  FILE* out = fopen(argv[2], "wb");
  if (!out || fwrite(y, sizeof(float), n, out) != n) return 5;
  fclose(out);
  const float c[] = {INDUS_EXP_LOG2E, INDUS_EXP_SHIFTER, INDUS_EXP_NEG_LN2_HI, INDUS_EXP_NEG_LN2_LO,
                     INDUS_EXP_C2, INDUS_EXP_C3, INDUS_EXP_C4, INDUS_EXP_C5, INDUS_EXP_C6, INDUS_EXP_C7};
  for (size_t i = 0; i < sizeof c / sizeof c[0]; ++i) {
    unsigned int b;
    memcpy(&b, &c[i], 4);
    printf("%08x\n", b);
  }
  return 0;
}
"#;

fn compiler() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("CC")
        .map(PathBuf::from)
        .into_iter()
        .chain(["cc", "gcc", "clang"].map(PathBuf::from))
        .collect();
    for c in &candidates {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.clone();
        }
    }
    panic!(
        "no C compiler found (tried {candidates:?}); this test compiles kernels/cuda/fma_exp.cuh as host C. \
         Install gcc or set CC."
    );
}

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("indus-fma-exp-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles the driver with `opt` and runs it on `inputs`; returns the outputs and the constants' bits.
fn run_c(dir: &Path, opt: &str, inputs: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let cuda_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    std::fs::write(
        dir.join("indus_shared.cuh"),
        indus_kernels::shared::cuda_header(),
    )
    .unwrap();
    std::fs::write(dir.join("driver.c"), DRIVER).unwrap();
    let tag: String = opt.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let exe = dir.join(format!("driver{tag}"));
    let out = Command::new(compiler())
        .args([
            "-std=c11",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-Wall",
            "-Werror",
        ])
        .args(opt.split_whitespace())
        .arg("-I")
        .arg(dir)
        .arg("-I")
        .arg(&cuda_dir)
        .arg(dir.join("driver.c"))
        .arg("-o")
        .arg(&exe)
        .arg("-lm")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compiling fma_exp.cuh as C failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes: Vec<u8> = inputs.iter().flat_map(|x| x.to_le_bytes()).collect();
    let (xin, yout) = (dir.join("x.bin"), dir.join(format!("y{tag}.bin")));
    std::fs::write(&xin, bytes).unwrap();
    let run = Command::new(&exe).arg(&xin).arg(&yout).output().unwrap();
    assert!(run.status.success(), "driver failed: {run:?}");
    let y: Vec<f32> = std::fs::read(&yout)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let consts = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| u32::from_str_radix(l, 16).unwrap())
        .collect();
    (y, consts)
}

#[test]
fn device_formula_as_host_c_matches_exp_fma_bit_for_bit_on_a_million_inputs() {
    use indus_kernels::shared::*;
    let inputs = exp_test_inputs(1_000_000, 0x1D05);
    let dir = scratch_dir();
    // Unoptimised, optimised, and with the host's own FMA instructions (fmaf inlined, vectorised loops).
    for opt in ["-O0", "-O2", "-O3 -march=native"] {
        let (y, consts) = run_c(&dir, opt, &inputs);
        assert_eq!(y.len(), inputs.len());
        // The header carries the very constants.
        let want: Vec<u32> = [
            EXP_LOG2E,
            EXP_SHIFTER,
            -EXP_LN2_HI,
            -EXP_LN2_LO,
            EXP_C2,
            EXP_C3,
            EXP_C4,
            EXP_C5,
            EXP_C6,
            EXP_C7,
        ]
        .iter()
        .map(|c| c.to_bits())
        .collect();
        assert_eq!(consts, want, "{opt}: constants");
        let differ: Vec<usize> = (0..inputs.len())
            .filter(|&i| y[i].to_bits() != exp_fma(inputs[i]).to_bits())
            .collect();
        assert!(
            differ.is_empty(),
            "{opt}: {} of {} differ, first at x = {:e}: C {:e} vs Rust {:e}",
            differ.len(),
            inputs.len(),
            inputs[differ[0]],
            y[differ[0]],
            exp_fma(inputs[differ[0]])
        );
        println!("{opt}: {} inputs, 0 differ", inputs.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_comparison_would_see_a_different_exp() {
    // The same harness fed libm's expf instead of the formula must report differences: the test can fail.
    let inputs = exp_test_inputs(100_000, 3);
    let differ = inputs
        .iter()
        .filter(|&&x| x.exp().to_bits() != exp_fma(x).to_bits() && !x.is_nan())
        .count();
    assert!(
        differ > 100,
        "libm's exp differs from exp_fma on only {differ} inputs"
    );
    println!(
        "libm expf vs exp_fma: {differ} of {} inputs differ",
        inputs.len()
    );
}
