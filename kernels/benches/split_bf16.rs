//! `cargo bench -p indus-kernels --bench split_bf16`: the split-bf16 AMX matmul beside candle's
//! f32 matmul (the `gemm` crate) on the same weights, at all-MiniLM-L6-v2's four projection
//! shapes for a client batch of 32 sentences of ~34 tokens (m = 1 088) and for one sentence
//! (m = 16). Skips the AMX rows where the process has no AMX.

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use indus_kernels::amx::{self, split_bf16};
use std::hint::black_box;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 16) as f32 / 65536.0) - 0.5)
        .collect()
}

/// The kernel's floor: each 32-row × 32-output block takes, per 32 values of k, ten tile loads
/// and twelve tile products (the three split products), and on the CPUs measured the AMX unit
/// runs them one after the other.
fn print_floor() {
    let Some((load, product)) = amx::probe_tile_costs(1_000_000) else {
        return;
    };
    let threads = candle_core::utils::get_num_threads();
    println!("tile load {load:.2} ns, tile product {product:.2} ns ({threads} threads)");
    for (n, k) in [(1152usize, 384usize), (384, 384), (1536, 384), (384, 1536)] {
        let steps = 1088usize.div_ceil(32) * n.div_ceil(32) * k.div_ceil(32);
        let ms = steps as f64 * (10.0 * load + 12.0 * product) / threads as f64 / 1e6;
        println!("floor {n}x{k} m=1088: {ms:.3} ms");
    }
}

fn bench(c: &mut Criterion) {
    print_floor();
    // (n, k): fused q/k/v, attention output, intermediate, output.
    for (n, k) in [(1152, 384), (384, 384), (1536, 384), (384, 1536)] {
        let wv = values(n * k, 1);
        let w = split_bf16::SplitBf16Weight::pack(&wv, n, k).unwrap();
        let wt = Tensor::from_vec(wv, (n, k), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        for m in [16, 1088] {
            let x = values(m * k, 2);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let mut g = c.benchmark_group(format!("{n}x{k} m={m}"));
            if amx::available() {
                g.bench_function("indus split-bf16 amx", |b| {
                    b.iter(|| split_bf16::matmul(black_box(&x), m, &w).unwrap())
                });
            }
            g.bench_function("candle f32", |b| {
                b.iter(|| black_box(&xt).matmul(&wt).unwrap())
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
