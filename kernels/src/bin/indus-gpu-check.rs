//! indus-gpu-check: every CUDA kernel of indus-kernels against its CPU reference on fresh random inputs, then a
//! timings table. Run by scripts/gpu-check.sh on a GPU machine.
//!
//! usage: indus-gpu-check [--require-gpu] [--quick] [--no-bench] [--out DIR] [--seed N]
//!   --require-gpu  no usable CUDA device is a failure (exit 3); without it the program says so and exits 0.
//!                  scripts/gpu-check.sh passes it whenever the machine shows a GPU.
//!   --quick        fewer correctness cases (bf16 and f32, a subset of shapes, fewer sampling rows)
//!   --no-bench     skip the timings
//!   --out DIR      also write DIR/gpu-check.md (results and timings)
//!
//! The checks themselves are `indus_kernels::check::suite` (unit-tested on CPU): bf16/f16 relative L2 <= 1e-2 over
//! each output and <= 1.5e-2 for its worst row, f32 1e-4 / 2e-4; cache writes, the sampler's exp, sampling and
//! argmax exact. Exit status: 0 when every check passed, 1 when one failed, no check ran, or an op was never
//! checked, 2 on an error outside the checks, 3 when --require-gpu finds no usable GPU.

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::{DType, Device, Result, Tensor};
use indus_kernels::check::suite::{self, Scale, SuiteOptions};
use indus_kernels::check::{
    AttentionInputs, Int4Inputs, Rng, ScoreRegime, SeqSpec, Verdict, decode_attention_bytes,
    prefill_attention_flops, results_table,
};
use indus_kernels::int4_matmul::int4_matmul;
use indus_kernels::metadata::AttentionMetadata;
use indus_kernels::paged_attention::{DecodeSplit, PagedAttentionOptions, paged_attention_with};
use indus_kernels::sampling::{self, SamplingRow};
use std::fmt::Write as _;
use std::process::ExitCode;

struct Opts {
    require_gpu: bool,
    quick: bool,
    bench: bool,
    out: Option<std::path::PathBuf>,
    seed: u64,
}

const USAGE: &str =
    "usage: indus-gpu-check [--require-gpu] [--quick] [--no-bench] [--out DIR] [--seed N]";

fn parse_args() -> std::result::Result<Opts, String> {
    let mut o = Opts {
        require_gpu: false,
        quick: false,
        bench: true,
        out: None,
        seed: 0x1D05,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--require-gpu" => o.require_gpu = true,
            "--quick" => o.quick = true,
            "--no-bench" => o.bench = false,
            "--out" => o.out = Some(args.next().ok_or("--out needs a directory")?.into()),
            "--seed" => {
                o.seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--seed needs a number")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("indus-gpu-check: {e}");
            return ExitCode::from(2);
        }
    };
    let dev = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) if opts.require_gpu => {
            eprintln!(
                "indus-gpu-check: FAIL: no usable CUDA device ({e}), and --require-gpu was given"
            );
            return ExitCode::from(3);
        }
        Err(e) => {
            println!(
                "indus-gpu-check: no usable CUDA device ({e}); skipping (pass --require-gpu to fail instead)"
            );
            return ExitCode::SUCCESS;
        }
    };
    match run(&dev, &opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("indus-gpu-check: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(dev: &Device, opts: &Opts) -> Result<bool> {
    let cuda = dev.as_cuda_device()?;
    let ctx = cuda.cuda_stream().context().clone();
    let name = ctx.name().unwrap_or_else(|_| "?".into());
    let sms = ctx
        .attribute(
            candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )
        .unwrap_or(0);
    let mut report = format!(
        "# indus-gpu-check\n\ndevice: {name}, {sms} SMs; kernels built for sm {}\n\n",
        indus_kernels::cuda::compiled_archs()
    );
    println!("{report}");
    let started = std::time::Instant::now();
    let suite_opts = SuiteOptions {
        scale: if opts.quick {
            Scale::Quick
        } else {
            Scale::Full
        },
        seed: opts.seed,
    };
    let results = suite::run(dev, &suite_opts, &mut |r| {
        if !r.passed() {
            eprintln!(
                "FAIL {} {:?} {}: error {:.3e}{}",
                r.name,
                r.dtype,
                r.detail,
                r.error,
                r.row_error
                    .map(|e| format!(", worst row {e:.3e}"))
                    .unwrap_or_default()
            );
        }
    });
    let verdict = Verdict::of(&results);
    let table = results_table(&results);
    println!("{table}");
    let summary = format!(
        "{} (correctness in {:.1} s)",
        verdict.summary(),
        started.elapsed().as_secs_f64()
    );
    println!("{summary}");
    let _ = writeln!(report, "## Correctness\n\n{summary}\n\n{table}");
    if opts.bench {
        let mut rng = Rng::new(opts.seed ^ 0xBE9C);
        match bench(dev, &mut rng) {
            Ok(t) => {
                println!("{t}");
                let _ = writeln!(report, "## Timings\n\n{t}");
            }
            Err(e) => {
                eprintln!("timings failed: {e}");
                let _ = writeln!(report, "## Timings\n\nfailed: {e}");
            }
        }
    }
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("gpu-check.md"), &report)?;
    }
    println!(
        "indus-gpu-check: {}: {}",
        if verdict.passed() { "PASS" } else { "FAIL" },
        verdict.summary()
    );
    Ok(verdict.passed())
}

fn to_dev(host: &[f32], shape: &[usize], dt: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_slice(host, shape, &Device::Cpu)?
        .to_dtype(dt)?
        .to_device(dev)
}

fn attention_inputs(seqs: &[SeqSpec], rng: &mut Rng) -> AttentionInputs {
    AttentionInputs::new(seqs, 16, (32, 8, 128), ScoreRegime::Random, rng)
}

// ---------------------------------------------------------------------------------------------- timings

/// Mean milliseconds per call of `f`, CUDA events on candle's stream, after warm-up.
fn time_ms(dev: &Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let cuda = dev.as_cuda_device()?;
    let stream = cuda.cuda_stream();
    let ctx = stream.context().clone();
    for _ in 0..3 {
        f()?;
    }
    let wrap = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
        candle_core::Error::Cuda(Box::new(e))
    };
    let start = ctx
        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(wrap)?;
    let end = ctx
        .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
        .map_err(wrap)?;
    start.record(&stream).map_err(wrap)?;
    for _ in 0..iters {
        f()?;
    }
    end.record(&stream).map_err(wrap)?;
    Ok(start.elapsed_ms(&end).map_err(wrap)? as f64 / iters as f64)
}

fn bench(dev: &Device, rng: &mut Rng) -> Result<String> {
    let mut t =
        String::from("| what | shape | time | achieved | of copy bw |\n|---|---|---|---|---|\n");
    // Device copy bandwidth (bytes read + written), the reference for every bandwidth figure below.
    let n = 256 << 20; // 1 GiB of f32
    let a = Tensor::zeros(n, DType::F32, dev)?;
    let mut sink = None;
    let copy_ms = time_ms(dev, 10, || {
        sink = Some(a.copy()?);
        Ok(())
    })?;
    drop(sink);
    let copy_bw = 2.0 * (n * 4) as f64 / (copy_ms * 1e-3) / 1e9;
    let _ = writeln!(
        t,
        "| device copy (Tensor::copy, read + write) | 1 GiB | {copy_ms:.3} ms | {copy_bw:.0} GB/s | 100 % |"
    );
    let row = |t: &mut String, what: &str, shape: String, ms: f64, bytes: f64| {
        let bw = bytes / (ms * 1e-3) / 1e9;
        let _ = writeln!(
            t,
            "| {what} | {shape} | {:.1} us | {bw:.0} GB/s | {:.0} % |",
            ms * 1e3,
            100.0 * bw / copy_bw
        );
    };
    let dt = DType::BF16;

    // Decode attention, Llama-3-8B shape: 32 q heads, 8 kv heads, head 128.
    for &(batch, ctx) in &[(64usize, 4096usize), (1, 32768), (256, 1024)] {
        let seqs = vec![SeqSpec::decode(ctx); batch];
        let inp = attention_inputs(&seqs, rng);
        let m = &inp.case;
        let dims = [m.num_blocks, 8, 16, 128];
        let q = to_dev(&inp.q, &[batch, 32, 128], dt, dev)?;
        let k = to_dev(&inp.k, &dims, dt, dev)?;
        let v = to_dev(&inp.v, &dims, dt, dev)?;
        let meta = AttentionMetadata::new(m.meta.clone(), dev)?;
        let bytes = decode_attention_bytes(&vec![ctx; batch], 32, 8, 128, 2) as f64;
        for (name, o) in [
            ("auto", PagedAttentionOptions::default()),
            (
                "no split",
                PagedAttentionOptions {
                    decode_split: DecodeSplit::Off,
                    ..Default::default()
                },
            ),
            (
                "split 512",
                PagedAttentionOptions {
                    decode_split: DecodeSplit::Partition(512),
                    ..Default::default()
                },
            ),
            (
                "split 1024",
                PagedAttentionOptions {
                    decode_split: DecodeSplit::Partition(1024),
                    ..Default::default()
                },
            ),
        ] {
            let ms = time_ms(dev, 20, || {
                paged_attention_with(&q, &k, &v, &meta, 0.088, o)?;
                Ok(())
            })?;
            row(
                &mut t,
                &format!("decode attention ({name})"),
                format!("bf16, batch {batch} x ctx {ctx}, 32/8 heads, hs 128"),
                ms,
                bytes,
            );
        }
    }

    // Prefill attention: tensor cores vs the general kernel.
    {
        let seqs = vec![SeqSpec::prefill(2048); 4];
        let inp = attention_inputs(&seqs, rng);
        let m = &inp.case;
        let dims = [m.num_blocks, 8, 16, 128];
        let tokens = m.meta.num_tokens();
        let q = to_dev(&inp.q, &[tokens, 32, 128], dt, dev)?;
        let k = to_dev(&inp.k, &dims, dt, dev)?;
        let v = to_dev(&inp.v, &dims, dt, dev)?;
        let meta = AttentionMetadata::new(m.meta.clone(), dev)?;
        let flops = prefill_attention_flops(&seqs, 32, 128);
        for (name, o) in [
            ("tensor cores", PagedAttentionOptions::default()),
            (
                "general kernel",
                PagedAttentionOptions {
                    general_kernel_only: true,
                    ..Default::default()
                },
            ),
        ] {
            let ms = time_ms(dev, 5, || {
                paged_attention_with(&q, &k, &v, &meta, 0.088, o)?;
                Ok(())
            })?;
            let _ = writeln!(
                t,
                "| prefill attention ({name}) | bf16, 4 x 2048 causal, 32/8 heads, hs 128 | {:.1} us | {:.1} TFLOP/s | |",
                ms * 1e3,
                flops / (ms * 1e-3) / 1e12
            );
        }
    }

    // Mixture of experts, Mixtral-8x7B layer: 8 experts of 4096 -> 14336, top 2: grouped by expert
    // through candle (one GEMM per expert and projection) and the grouped kernels (three launches).
    // Bytes: the experts the batch hits.
    {
        let (h, i, e, k) = (4096usize, 14336usize, 8usize, 2usize);
        let gu = to_dev(&rng.normals(e * 2 * i * h, 0.02), &[e, 2 * i, h], dt, dev)?;
        let dn = to_dev(&rng.normals(e * h * i, 0.02), &[e, h, i], dt, dev)?;
        for &tokens in &[1usize, 16, 256] {
            let x = to_dev(&rng.normals(tokens * h, 1.0), &[tokens, h], dt, dev)?;
            let logits =
                Tensor::from_slice(&rng.normals(tokens * e, 1.0), (tokens, e), &Device::Cpu)?;
            let (ids, w) = indus_kernels::route_top_k(&logits, k, true)?;
            let hit = {
                let mut v: Vec<u32> = ids.flatten_all()?.to_vec1()?;
                v.sort_unstable();
                v.dedup();
                v.len()
            };
            let (ids, w) = (ids.to_device(dev)?, w.to_device(dev)?);
            let experts = indus_kernels::ExpertWeights {
                gate_up: &gu,
                down: &dn,
            };
            for (name, path) in [
                ("expert GEMMs", indus_kernels::MoePath::ExpertGemms),
                ("grouped kernels", indus_kernels::MoePath::Grouped),
            ] {
                let ms = time_ms(dev, 10, || {
                    indus_kernels::fused_moe_with(&x, &ids, &w, &experts, path)?;
                    Ok(())
                })?;
                row(
                    &mut t,
                    &format!("fused MoE ({name})"),
                    format!("bf16, {tokens} tokens, 4096 -> 14336, top 2 of 8 ({hit} experts hit)"),
                    ms,
                    (hit * 3 * h * i * 2) as f64,
                );
            }
        }
    }

    // W4A16 against the bf16 GEMM of the same shape (Llama-3-8B's gate/up and down projections, group 128). The
    // floor is the packed weight's bytes (nibbles, f16 scales, zeros) over the copy bandwidth; "vs bf16" is the
    // bf16 matmul's time over the int4 one's (the target at M <= 16 is 3x).
    for &(k, n) in &[(4096usize, 14336usize), (14336, 4096)] {
        let w = Int4Inputs::random(k, n, Some(128), false, 1, rng);
        let wt = w.tensors(dev)?;
        let dense = to_dev(&rng.normals(k * n, 0.02), &[k, n], dt, dev)?;
        let packed_bytes = (k * n / 2 + w.groups() * n * 2 + w.groups() * n / 2) as f64;
        for &m in &[1usize, 16, 64, 256] {
            let x = to_dev(&rng.normals(m * k, 1.0), &[m, k], dt, dev)?;
            let int4_ms = time_ms(dev, 20, || {
                int4_matmul(&x, &wt.matrix())?;
                Ok(())
            })?;
            let bf16_ms = time_ms(dev, 20, || {
                x.matmul(&dense)?;
                Ok(())
            })?;
            let io = (m * (k + n) * 2) as f64;
            row(
                &mut t,
                &format!("int4 W4A16 ({:.2}x vs bf16)", bf16_ms / int4_ms),
                format!("M {m}, K {k}, N {n}, group 128"),
                int4_ms,
                packed_bytes + io,
            );
            row(
                &mut t,
                "bf16 matmul (cuBLAS)",
                format!("M {m}, K {k}, N {n}"),
                bf16_ms,
                (k * n * 2) as f64 + io,
            );
        }
    }

    // Small fused ops at Llama-3-8B widths.
    for &rows in &[64usize, 4096] {
        let dim = 4096;
        let x = to_dev(&rng.normals(rows * dim, 1.0), &[rows, dim], dt, dev)?;
        let r = to_dev(&rng.normals(rows * dim, 1.0), &[rows, dim], dt, dev)?;
        let w = to_dev(&vec![1.0; dim], &[dim], dt, dev)?;
        let ms = time_ms(dev, 50, || {
            indus_kernels::rms_norm(&x, &w, 1e-5)?;
            Ok(())
        })?;
        row(
            &mut t,
            "rms_norm",
            format!("bf16 {rows}x{dim}"),
            ms,
            (2 * rows * dim * 2 + dim * 2) as f64,
        );
        let ms = time_ms(dev, 50, || {
            indus_kernels::fused_add_rms_norm(&x, &r, &w, 1e-5)?;
            Ok(())
        })?;
        row(
            &mut t,
            "fused_add_rms_norm",
            format!("bf16 {rows}x{dim}"),
            ms,
            (4 * rows * dim * 2 + dim * 2) as f64,
        );

        let (heads, hs) = (32, 128);
        let xq = to_dev(
            &rng.normals(rows * heads * hs, 1.0),
            &[rows, heads, hs],
            dt,
            dev,
        )?;
        let c = Tensor::ones((rows, hs / 2), DType::F32, dev)?;
        let ms = time_ms(dev, 50, || {
            indus_kernels::apply_rotary(&xq, &c, &c)?;
            Ok(())
        })?;
        row(
            &mut t,
            "rotary (q)",
            format!("bf16 {rows}x{heads}x{hs}"),
            ms,
            (2 * rows * heads * hs * 2 + 2 * rows * hs / 2 * 4) as f64,
        );

        let inter = 14336;
        let g = to_dev(
            &rng.normals(rows * 2 * inter, 1.0),
            &[rows, 2 * inter],
            dt,
            dev,
        )?;
        let ms = time_ms(dev, 50, || {
            indus_kernels::silu_mul(&g)?;
            Ok(())
        })?;
        row(
            &mut t,
            "silu_mul",
            format!("bf16 {rows}x{inter}"),
            ms,
            (3 * rows * inter * 2) as f64,
        );

        let (kvh, blocks) = (8, rows.div_ceil(16) + 1);
        let cache = Tensor::zeros((blocks, kvh, 16, hs), dt, dev)?;
        let newk = to_dev(
            &rng.normals(rows * kvh * hs, 1.0),
            &[rows, kvh, hs],
            dt,
            dev,
        )?;
        let slots = Tensor::arange(0i64, rows as i64, dev)?;
        let ms = time_ms(dev, 50, || {
            indus_kernels::write_kv_cache(&cache, &newk, &slots)
        })?;
        row(
            &mut t,
            "write_kv_cache (K)",
            format!("bf16 {rows} tokens x {kvh}x{hs}"),
            ms,
            (2 * rows * kvh * hs * 2) as f64,
        );
    }

    // Sampling over a Llama-3 vocabulary.
    for (name, rows) in [
        ("greedy", None),
        (
            "top-k 50 + top-p 0.9, T 0.8",
            Some(vec![
                SamplingRow {
                    temperature: 0.8,
                    top_k: 50,
                    top_p: 0.9,
                    min_p: 0.0,
                    uniform: 0.5
                };
                64
            ]),
        ),
        (
            "top-p 0.95 + min-p 0.05",
            Some(vec![
                SamplingRow {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 0.95,
                    min_p: 0.05,
                    uniform: 0.5
                };
                64
            ]),
        ),
    ] {
        let vocab = 128_256;
        let l = Tensor::from_slice(&rng.normals(64 * vocab, 3.0), (64, vocab), dev)?;
        let ms = time_ms(dev, 20, || {
            match &rows {
                Some(r) => sampling::sample(&l, r)?,
                None => sampling::argmax(&l)?,
            };
            Ok(())
        })?;
        row(
            &mut t,
            &format!("sample ({name})"),
            format!("f32 64 x {vocab}"),
            ms,
            (64 * vocab * 4) as f64,
        );
    }
    Ok(t)
}
