//! `cargo bench -p indus-kernels --bench block_matmul`: our Q4_1 / Q8_0 matmuls beside
//! candle's `QMatMul` on the same weights, at SmolLM2-135M's shapes (fused gate/up 3072 × 576,
//! the tied output projection 49152 × 576) for one decode row and a batch of 16, with each
//! SIMD path this CPU has.
//! Build with `RUSTFLAGS="-C target-cpu=native"` to compare with llama.cpp's native build.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use indus_kernels::block_matmul::{BlockType, Simd, block_matmul_with};
use std::hint::black_box;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 16) as f32 / 65536.0) - 0.5)
        .collect()
}

fn bench(c: &mut Criterion) {
    let k = 576;
    for (dtype, n, label) in [
        (GgmlDType::Q4_1, 3072, "q4_1 3072x576"),
        (GgmlDType::Q8_0, 49152, "q8_0 49152x576"),
    ] {
        let w = Tensor::from_vec(values(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        let bytes = q.data().unwrap().into_owned();
        let candle = QMatMul::from_qtensor(q).unwrap();
        for m in [1, 16] {
            let x = values(m * k, 2);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let mut g = c.benchmark_group(format!("{label} m={m}"));
            for simd in [Simd::Avx512Vnni, Simd::Avx2] {
                let t = match dtype {
                    GgmlDType::Q4_1 => BlockType::Q4_1,
                    _ => BlockType::Q8_0,
                };
                let run = |x: &[f32]| block_matmul_with(t, x, m, k, &bytes, n, simd);
                if run(&x).is_err() {
                    continue; // not on this CPU
                }
                g.bench_function(format!("indus {simd:?}"), |b| b.iter(|| run(black_box(&x))));
            }
            g.bench_function("candle", |b| {
                b.iter(|| candle.forward(black_box(&xt)).unwrap())
            });
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
