//! indus-gpu-check: every CUDA kernel of indus-kernels against its CPU reference on fresh random inputs, then a
//! timings table. Run by scripts/gpu-check.sh on a GPU machine; exits 0 with a message when there is no GPU.
//!
//! usage: indus-gpu-check [--quick] [--no-bench] [--out DIR] [--seed N]
//!   --quick     fewer correctness cases (one dtype sweep per op)
//!   --no-bench  skip the timings
//!   --out DIR   also write DIR/gpu-check.md (results and timings)
//!
//! Correctness: bf16/f16 rel. L2 < 1e-2, f32 < 1e-4 (cache writes and sampling: exact). Inputs are poisoned
//! where a kernel must not read (NaN in every cache slot outside the sequences' contexts, NaN-filled memory pool
//! before each op so an output element a kernel forgets to write shows up as NaN).

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::{DType, Device, Result, Tensor};
use indus_kernels::check::{
    AttentionCase, CheckResult, Rng, SeqSpec, decode_attention_bytes, max_abs_diff,
    mismatches_exact, prefill_attention_flops, rel_l2, results_table, tolerance,
};
use indus_kernels::metadata::AttentionMetadata;
use indus_kernels::paged_attention::{DecodeSplit, PagedAttentionOptions, paged_attention_with};
use indus_kernels::sampling::{self, SamplingRow};
use std::fmt::Write as _;
use std::process::ExitCode;

const DTYPES: [DType; 3] = [DType::BF16, DType::F16, DType::F32];

struct Opts {
    quick: bool,
    bench: bool,
    out: Option<std::path::PathBuf>,
    seed: u64,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        quick: false,
        bench: true,
        out: None,
        seed: 0x1D05,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-bench" => o.bench = false,
            "--out" => o.out = args.next().map(Into::into),
            "--seed" => o.seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(o.seed),
            "-h" | "--help" => {
                println!("usage: indus-gpu-check [--quick] [--no-bench] [--out DIR] [--seed N]");
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    o
}

fn main() -> ExitCode {
    let opts = parse_args();
    let dev = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            println!("indus-gpu-check: no usable CUDA device ({e}); skipping");
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
    let mut rng = Rng::new(opts.seed);
    let mut results = Vec::new();
    let dtypes: &[DType] = if opts.quick {
        &[DType::BF16, DType::F32]
    } else {
        &DTYPES
    };
    // An error inside a check (a launch failure, an unsupported conversion) is recorded as a failure of that
    // check, and the others still run.
    let guard = |name: &str, dt: DType, r: Result<()>, results: &mut Vec<CheckResult>| {
        if let Err(e) = r {
            eprintln!("FAIL {name} {dt:?}: error: {e}");
            results.push(CheckResult {
                name: name.into(),
                dtype: dt,
                detail: format!("error: {e}").replace('|', "/").replace('\n', " "),
                error: f64::INFINITY,
                tolerance: 0.0,
            });
        }
    };
    for &dt in dtypes {
        let r = check_cache_write(dev, dt, &mut rng, &mut results);
        guard("write_kv_cache", dt, r, &mut results);
        let r = check_norms(dev, dt, &mut rng, &mut results);
        guard("rms_norm", dt, r, &mut results);
        let r = check_rotary(dev, dt, &mut rng, &mut results);
        guard("rotary", dt, r, &mut results);
        let r = check_silu(dev, dt, &mut rng, &mut results);
        guard("silu_mul", dt, r, &mut results);
        let r = check_attention(dev, dt, opts.quick, &mut rng, &mut results);
        guard("paged_attention", dt, r, &mut results);
    }
    let r = check_sampling(dev, &mut rng, &mut results);
    guard("sample", DType::F32, r, &mut results);
    let failed = results.iter().filter(|r| !r.passed()).count();
    let table = results_table(&results);
    println!("{table}");
    println!("{} checks, {failed} failed", results.len());
    let _ = writeln!(
        report,
        "## Correctness\n\n{} checks, {failed} failed\n\n{table}",
        results.len()
    );
    if opts.bench {
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
    println!("{} passed, {failed} failed", results.len() - failed);
    Ok(failed == 0)
}

// ---------------------------------------------------------------------------------------------- helpers

/// Fills the device's memory pool with NaN bytes and frees it, so the next allocations (the ops' outputs) start
/// out poisoned.
fn poison_pool(dev: &Device, bytes: usize) -> Result<()> {
    let t = Tensor::full(f32::NAN, bytes / 4, dev)?;
    drop(t);
    Ok(())
}

fn to_dev(host: &[f32], shape: &[usize], dt: DType, dev: &Device) -> Result<Tensor> {
    Tensor::from_slice(host, shape, &Device::Cpu)?
        .to_dtype(dt)?
        .to_device(dev)
}

fn cpu_of(host: &[f32], shape: &[usize], dt: DType) -> Result<Tensor> {
    Tensor::from_slice(host, shape, &Device::Cpu)?.to_dtype(dt)
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()
}

fn push(
    out: &mut Vec<CheckResult>,
    name: &str,
    dt: DType,
    detail: String,
    got: &[f32],
    want: &[f32],
) {
    let error = rel_l2(got, want);
    let r = CheckResult {
        name: name.into(),
        dtype: dt,
        detail: format!("{detail} (max abs {:.1e})", max_abs_diff(got, want)),
        error,
        tolerance: tolerance(dt),
    };
    if !r.passed() {
        eprintln!("FAIL {name} {dt:?} {}: rel l2 {error:.3e}", r.detail);
    }
    out.push(r);
}

// ---------------------------------------------------------------------------------------------- checks

fn check_cache_write(
    dev: &Device,
    dt: DType,
    rng: &mut Rng,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    for &(hs, kvh, tokens) in &[(64, 1, 1), (128, 8, 37), (128, 2, 16), (256, 4, 5)] {
        let bs = 16;
        let blocks = 9;
        let cache0: Vec<f32> = vec![f32::NAN; blocks * kvh * bs * hs];
        let new = rng.normals(tokens * kvh * hs, 1.0);
        let mut slots: Vec<usize> = (0..blocks * bs).collect();
        rng.shuffle(&mut slots);
        let slots: Vec<i64> = (0..tokens)
            .map(|t| if t % 5 == 3 { -1 } else { slots[t] as i64 })
            .collect();
        let dims = [blocks, kvh, bs, hs];
        let cpu_cache = cpu_of(&cache0, &dims, dt)?;
        let cpu_new = cpu_of(&new, &[tokens, kvh, hs], dt)?;
        let slots_cpu = Tensor::new(slots.as_slice(), &Device::Cpu)?;
        indus_kernels::write_kv_cache(&cpu_cache, &cpu_new, &slots_cpu)?;
        let gpu_cache = to_dev(&cache0, &dims, dt, dev)?;
        let gpu_new = to_dev(&new, &[tokens, kvh, hs], dt, dev)?;
        // i64 slots go to the kernel as they are; other integer dtypes are converted by the wrapper.
        let slots_gpu = if hs == 128 {
            slots_cpu.to_dtype(DType::I32)?.to_device(dev)?
        } else {
            slots_cpu.to_device(dev)?
        };
        indus_kernels::write_kv_cache(&gpu_cache, &gpu_new, &slots_gpu)?;
        let (got, want) = (flat(&gpu_cache)?, flat(&cpu_cache)?);
        let mism = mismatches_exact(&got, &want);
        out.push(CheckResult {
            name: "write_kv_cache".into(),
            dtype: dt,
            detail: format!("hs {hs} kvh {kvh} tokens {tokens} (exact; mismatches)"),
            error: mism as f64,
            tolerance: 0.0,
        });
    }
    Ok(())
}

fn check_norms(dev: &Device, dt: DType, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    for &(rows, dim) in &[(1, 4096), (7, 4096), (64, 5120), (3, 1000), (2, 8)] {
        let x = rng.normals(rows * dim, 1.0);
        let r = rng.normals(rows * dim, 1.0);
        let w: Vec<f32> = (0..dim).map(|_| 1.0 + 0.1 * rng.normal()).collect();
        let eps = 1e-5;
        let want = indus_kernels::rms_norm(
            &cpu_of(&x, &[rows, dim], dt)?,
            &cpu_of(&w, &[dim], dt)?,
            eps,
        )?;
        poison_pool(dev, 64 << 20)?;
        let got = indus_kernels::rms_norm(
            &to_dev(&x, &[rows, dim], dt, dev)?,
            &to_dev(&w, &[dim], dt, dev)?,
            eps,
        )?;
        push(
            out,
            "rms_norm",
            dt,
            format!("{rows}x{dim}"),
            &flat(&got)?,
            &flat(&want)?,
        );

        let (wn, ws) = indus_kernels::fused_add_rms_norm(
            &cpu_of(&x, &[rows, dim], dt)?,
            &cpu_of(&r, &[rows, dim], dt)?,
            &cpu_of(&w, &[dim], dt)?,
            eps,
        )?;
        poison_pool(dev, 64 << 20)?;
        let (gn, gs) = indus_kernels::fused_add_rms_norm(
            &to_dev(&x, &[rows, dim], dt, dev)?,
            &to_dev(&r, &[rows, dim], dt, dev)?,
            &to_dev(&w, &[dim], dt, dev)?,
            eps,
        )?;
        push(
            out,
            "fused_add_rms_norm.normed",
            dt,
            format!("{rows}x{dim}"),
            &flat(&gn)?,
            &flat(&wn)?,
        );
        push(
            out,
            "fused_add_rms_norm.residual",
            dt,
            format!("{rows}x{dim}"),
            &flat(&gs)?,
            &flat(&ws)?,
        );
    }
    Ok(())
}

fn check_rotary(dev: &Device, dt: DType, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    for &(tokens, heads, hs) in &[(1, 32, 128), (13, 8, 64), (40, 4, 128), (3, 2, 10)] {
        let half = hs / 2;
        // q and k narrowed out of a fused qkv row, as the model does: a strided view on the GPU.
        let width = heads * hs * 3;
        let qkv = rng.normals(tokens * width, 1.0);
        let angles: Vec<f32> = (0..tokens * half).map(|_| rng.uniform() * 40.0).collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        // [tokens, 3 * heads, hs] narrowed to the k heads: strides (3 * heads * hs, hs, 1), no copy.
        let view = |t: Tensor| -> Result<Tensor> {
            t.reshape((tokens, 3 * heads, hs))?.narrow(1, heads, heads)
        };
        let cpu_x = view(cpu_of(&qkv, &[tokens, width], dt)?)?;
        let cpu_c = Tensor::from_slice(&cos, (tokens, half), &Device::Cpu)?;
        let cpu_s = Tensor::from_slice(&sin, (tokens, half), &Device::Cpu)?;
        let want = indus_kernels::apply_rotary(&cpu_x, &cpu_c, &cpu_s)?;
        let gx = to_dev(&qkv, &[tokens, width], dt, dev)?;
        let (gc, gs) = (cpu_c.to_device(dev)?, cpu_s.to_device(dev)?);
        poison_pool(dev, 64 << 20)?;
        let gv = view(gx.clone())?;
        assert!(
            !gv.is_contiguous(),
            "the strided case must be a strided view"
        );
        let strided = indus_kernels::apply_rotary(&gv, &gc, &gs)?;
        push(
            out,
            "rotary (strided qkv view)",
            dt,
            format!("{tokens}x{heads}x{hs}"),
            &flat(&strided)?,
            &flat(&want)?,
        );
        let contiguous = indus_kernels::apply_rotary(&view(gx)?.contiguous()?, &gc, &gs)?;
        push(
            out,
            "rotary (contiguous)",
            dt,
            format!("{tokens}x{heads}x{hs}"),
            &flat(&contiguous)?,
            &flat(&want)?,
        );
    }
    Ok(())
}

fn check_silu(dev: &Device, dt: DType, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    for &(rows, inter) in &[(1, 14336), (9, 11008), (4, 1001), (2, 3)] {
        let x = rng.normals(rows * 2 * inter, 2.0);
        let want = indus_kernels::silu_mul(&cpu_of(&x, &[rows, 2 * inter], dt)?)?;
        poison_pool(dev, 64 << 20)?;
        let got = indus_kernels::silu_mul(&to_dev(&x, &[rows, 2 * inter], dt, dev)?)?;
        push(
            out,
            "silu_mul",
            dt,
            format!("{rows}x{inter}"),
            &flat(&got)?,
            &flat(&want)?,
        );
    }
    Ok(())
}

struct AttnInputs {
    case: AttentionCase,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    heads: usize,
    kvh: usize,
    hs: usize,
}

fn attention_inputs(
    seqs: &[SeqSpec],
    heads: usize,
    kvh: usize,
    hs: usize,
    rng: &mut Rng,
) -> AttnInputs {
    let case = AttentionCase::new(seqs, 16, 2, rng);
    let q = rng.normals(case.meta.num_tokens() * heads * hs, 1.0);
    let k = case.cache(kvh, hs, rng);
    let v = case.cache(kvh, hs, rng);
    AttnInputs {
        case,
        q,
        k,
        v,
        heads,
        kvh,
        hs,
    }
}

fn run_attention(
    inp: &AttnInputs,
    dt: DType,
    dev: &Device,
    opts: PagedAttentionOptions,
) -> Result<Tensor> {
    let m = &inp.case;
    let cache_dims = [m.num_blocks, inp.kvh, m.block_size, inp.hs];
    let q = to_dev(&inp.q, &[m.meta.num_tokens(), inp.heads, inp.hs], dt, dev)?;
    let k = to_dev(&inp.k, &cache_dims, dt, dev)?;
    let v = to_dev(&inp.v, &cache_dims, dt, dev)?;
    let meta = AttentionMetadata::new(m.meta.clone(), dev)?;
    paged_attention_with(&q, &k, &v, &meta, 1.0 / (inp.hs as f32).sqrt(), opts)
}

fn check_attention(
    dev: &Device,
    dt: DType,
    quick: bool,
    rng: &mut Rng,
    out: &mut Vec<CheckResult>,
) -> Result<()> {
    use SeqSpec as S;
    let scenarios: Vec<(&str, Vec<SeqSpec>)> = vec![
        (
            "decode, block edges",
            vec![
                S::decode(1),
                S::decode(15),
                S::decode(16),
                S::decode(17),
                S::decode(33),
                S::decode(300),
            ],
        ),
        (
            "decode, long",
            vec![S::decode(1000), S::decode(2500), S::decode(4097)],
        ),
        (
            "prefill, 1-token and block-edge prompts",
            vec![
                S::prefill(1),
                S::prefill(16),
                S::prefill(17),
                S::prefill(100),
            ],
        ),
        (
            "chunked prefill",
            vec![S::chunk(200, 37), S::chunk(64, 64), S::chunk(129, 65)],
        ),
        (
            "mixed batch",
            vec![
                S::decode(50),
                S::prefill(70),
                S::decode(513),
                S::chunk(300, 1),
                S::chunk(90, 33),
            ],
        ),
    ];
    let gqa: &[(usize, usize)] = if quick {
        &[(32, 8), (28, 4)]
    } else {
        &[(8, 8), (32, 8), (32, 4), (28, 4), (16, 1)]
    };
    let head_sizes: &[usize] = if quick { &[128] } else { &[64, 128, 256] };
    for &hs in head_sizes {
        for &(heads, kvh) in gqa {
            if hs == 256 && heads > 16 {
                continue; // keep the CPU reference time in check
            }
            for (name, seqs) in &scenarios {
                let inp = attention_inputs(seqs, heads, kvh, hs, rng);
                let m = &inp.case;
                let dims = [m.num_blocks, kvh, m.block_size, hs];
                let want = {
                    let meta = AttentionMetadata::new(m.meta.clone(), &Device::Cpu)?;
                    let q = cpu_of(&inp.q, &[m.meta.num_tokens(), heads, hs], dt)?;
                    let (k, v) = (cpu_of(&inp.k, &dims, dt)?, cpu_of(&inp.v, &dims, dt)?);
                    flat(&indus_kernels::paged_attention(
                        &q,
                        &k,
                        &v,
                        &meta,
                        1.0 / (hs as f32).sqrt(),
                    )?)?
                };
                let decode_only = seqs.iter().all(|s| s.q_len == 1);
                let mut variants: Vec<(String, PagedAttentionOptions)> =
                    vec![("auto".into(), PagedAttentionOptions::default())];
                if decode_only {
                    variants.push((
                        "split off".into(),
                        PagedAttentionOptions {
                            decode_split: DecodeSplit::Off,
                            ..Default::default()
                        },
                    ));
                    variants.push((
                        "split 256".into(),
                        PagedAttentionOptions {
                            decode_split: DecodeSplit::Partition(256),
                            ..Default::default()
                        },
                    ));
                } else {
                    variants.push((
                        "general kernel".into(),
                        PagedAttentionOptions {
                            general_kernel_only: true,
                            ..Default::default()
                        },
                    ));
                }
                for (vname, o) in variants {
                    poison_pool(dev, 256 << 20)?;
                    let got = flat(&run_attention(&inp, dt, dev, o)?)?;
                    push(
                        out,
                        "paged_attention",
                        dt,
                        format!("{name}; hs {hs}, {heads}/{kvh} heads; {vname}"),
                        &got,
                        &want,
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_sampling(dev: &Device, rng: &mut Rng, out: &mut Vec<CheckResult>) -> Result<()> {
    for &vocab in &[1000usize, 32007, 128_256] {
        let batch = 16;
        let logits: Vec<f32> = (0..batch * vocab).map(|_| rng.normal() * 3.0).collect();
        let mut rows = Vec::new();
        for b in 0..batch {
            rows.push(match b % 6 {
                0 => SamplingRow::greedy(),
                1 => SamplingRow {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    uniform: rng.uniform(),
                },
                2 => SamplingRow {
                    temperature: 0.7,
                    top_k: 50,
                    top_p: 1.0,
                    min_p: 0.0,
                    uniform: rng.uniform(),
                },
                3 => SamplingRow {
                    temperature: 0.9,
                    top_k: 0,
                    top_p: 0.9,
                    min_p: 0.0,
                    uniform: rng.uniform(),
                },
                4 => SamplingRow {
                    temperature: 1.2,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.05,
                    uniform: rng.uniform(),
                },
                _ => SamplingRow {
                    temperature: 0.8,
                    top_k: 40,
                    top_p: 0.95,
                    min_p: 0.02,
                    uniform: rng.uniform(),
                },
            });
        }
        let want = sampling::sample_reference(&logits, vocab, Some(&rows));
        let t = Tensor::from_slice(&logits, (batch, vocab), dev)?;
        let got: Vec<u32> = sampling::sample(&t, &rows)?.to_vec1()?;
        let mism = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        out.push(CheckResult {
            name: "sample".into(),
            dtype: DType::F32,
            detail: format!("batch {batch}, vocab {vocab}, greedy/top-k/top-p/min-p (exact; mismatches {got:?} vs {want:?})"),
            error: mism as f64,
            tolerance: 0.0,
        });
        let want = sampling::sample_reference(&logits, vocab, None);
        let got: Vec<u32> = sampling::argmax(&t)?.to_vec1()?;
        out.push(CheckResult {
            name: "argmax".into(),
            dtype: DType::F32,
            detail: format!("batch {batch}, vocab {vocab} (exact; mismatches)"),
            error: got.iter().zip(&want).filter(|(a, b)| a != b).count() as f64,
            tolerance: 0.0,
        });
    }
    Ok(())
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
        let inp = attention_inputs(&seqs, 32, 8, 128, rng);
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
        let inp = attention_inputs(&seqs, 32, 8, 128, rng);
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
