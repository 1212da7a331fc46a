//! Offline benchmarks on the engine itself, no HTTP: `bench throughput` (N requests at once,
//! tokens/s) and `bench latency` (prefill time and per-step decode time of one batch, beside
//! the roofline floor: weight bytes ÷ memory bandwidth).

use super::metrics::percentile;
use crate::config::{CacheArgs, ModelArgs, SchedulerArgs};
use crate::engine::{CompletedRequest, Engine, EngineHandle, Request, SamplingParams};
use anyhow::{Context, bail};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// The model and engine flags of the offline commands.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub sched: SchedulerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ThroughputArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, default_value_t = 64)]
    pub num_prompts: usize,
    #[arg(long, default_value_t = 128)]
    pub input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Lengths are drawn uniformly from [len·(1−r), len·(1+r)].
    #[arg(long, default_value_t = 0.0)]
    pub range_ratio: f64,
    /// Tokens of one prefix shared by every prompt (prefix caching).
    #[arg(long, default_value_t = 0)]
    pub prefix_len: usize,
    #[arg(long, default_value_t = 0)]
    pub bench_seed: u64,
    #[arg(long)]
    pub output_json: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 32)]
    pub input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Measured iterations.
    #[arg(long, default_value_t = 3)]
    pub num_iters: usize,
    #[arg(long, default_value_t = 1)]
    pub num_iters_warmup: usize,
    /// Memory bandwidth in GB/s for the roofline (bytes read + written per second, as a
    /// device-to-device copy counts them); measured with a copy loop when absent.
    #[arg(long)]
    pub bandwidth_gbps: Option<f64>,
    #[arg(long)]
    pub output_json: Option<PathBuf>,
}

/// What the roofline needs about the loaded model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub parameters: usize,
    pub dtype: String,
    pub weight_bytes: usize,
    pub device: String,
}

/// Loads the model and starts the engine (as `loader::start_engine`, keeping the figures).
pub fn start(args: &EngineArgs) -> anyhow::Result<(EngineHandle, ModelInfo)> {
    let loaded = crate::loader::load_model(&args.model)?;
    let cfg = loaded.model.config();
    let info = ModelInfo {
        name: loaded.name.clone(),
        parameters: cfg.num_parameters(),
        dtype: format!("{:?}", loaded.model.dtype()).to_lowercase(),
        weight_bytes: loaded.summary.weight_bytes,
        device: args.model.device.clone(),
    };
    let config =
        crate::loader::engine_config(&loaded.model, &args.cache, &args.sched, args.model.seed)?;
    let engine = Engine::new(loaded.model, loaded.tokenizer, config)?;
    let handle = EngineHandle::spawn(engine)?;
    Ok((handle, info))
}

fn params(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        max_tokens,
        ignore_eos: true,
        temperature: 0.0,
        ..Default::default()
    }
}

fn random_ids(rng: &mut ChaCha8Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

fn len_around(rng: &mut ChaCha8Rng, mean: usize, ratio: f64) -> usize {
    if ratio <= 0.0 {
        return mean.max(1);
    }
    let lo = ((mean as f64) * (1.0 - ratio)).floor().max(1.0) as usize;
    let hi = ((mean as f64) * (1.0 + ratio)).ceil() as usize;
    rng.random_range(lo..=hi.max(lo))
}

/// The token ids a benchmark may use: the model's and the tokenizer's vocabularies both.
fn usable_vocab(engine: &EngineHandle) -> usize {
    engine
        .limits()
        .vocab_size
        .min(engine.tokenizer().vocab_size())
        .max(1)
}

/// Submits all and waits for all.
fn run_batch(
    rt: &tokio::runtime::Runtime,
    engine: &EngineHandle,
    prompts: Vec<(Vec<u32>, usize)>,
    tag: &str,
) -> anyhow::Result<Vec<CompletedRequest>> {
    let streams = prompts
        .into_iter()
        .enumerate()
        .map(|(i, (ids, out))| engine.submit(Request::new(format!("{tag}-{i}"), ids, params(out))))
        .collect::<Result<Vec<_>, _>>()?;
    let done = rt.block_on(futures::future::join_all(
        streams.into_iter().map(|s| s.collect()),
    ));
    Ok(done.into_iter().collect::<Result<Vec<_>, _>>()?)
}

#[derive(Debug, Serialize)]
pub struct ThroughputResult {
    pub model: ModelInfo,
    pub num_requests: usize,
    pub elapsed_s: f64,
    pub total_prompt_tokens: usize,
    pub total_output_tokens: usize,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub total_tokens_per_s: f64,
    pub mean_ttft_ms: f64,
    pub mean_e2e_ms: f64,
}

pub fn throughput(args: &ThroughputArgs) -> anyhow::Result<ThroughputResult> {
    if args.num_prompts == 0 {
        bail!("--num-prompts must be positive");
    }
    let (engine, info) = start(&args.engine)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let vocab = usable_vocab(&engine);
    let mut rng = ChaCha8Rng::seed_from_u64(args.bench_seed);
    let prefix = random_ids(&mut rng, args.prefix_len, vocab);
    let prompts: Vec<(Vec<u32>, usize)> = (0..args.num_prompts)
        .map(|_| {
            let n = len_around(&mut rng, args.input_len, args.range_ratio);
            let mut ids = prefix.clone();
            ids.extend(random_ids(&mut rng, n, vocab));
            (ids, len_around(&mut rng, args.output_len, args.range_ratio))
        })
        .collect();
    // Warm-up: one short request (allocations, lazy initialization).
    run_batch(
        &rt,
        &engine,
        vec![(random_ids(&mut rng, 8, vocab), 2)],
        "warmup",
    )?;
    let started = Instant::now();
    let done = run_batch(&rt, &engine, prompts, "tp")?;
    let elapsed = started.elapsed().as_secs_f64();
    let prompt_tokens: usize = done.iter().map(|d| d.num_prompt_tokens).sum();
    let output_tokens: usize = done.iter().map(|d| d.num_generated_tokens()).sum();
    let mean = |f: &dyn Fn(&CompletedRequest) -> Option<f64>| {
        let v: Vec<f64> = done.iter().filter_map(f).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let r = ThroughputResult {
        model: info,
        num_requests: done.len(),
        elapsed_s: elapsed,
        total_prompt_tokens: prompt_tokens,
        total_output_tokens: output_tokens,
        requests_per_s: done.len() as f64 / elapsed,
        output_tokens_per_s: output_tokens as f64 / elapsed,
        total_tokens_per_s: (prompt_tokens + output_tokens) as f64 / elapsed,
        mean_ttft_ms: mean(&|d| {
            let t = d.times?;
            Some((t.first_token? - t.arrival).as_secs_f64() * 1e3)
        }),
        mean_e2e_ms: mean(&|d| {
            let t = d.times?;
            Some((t.finished? - t.arrival).as_secs_f64() * 1e3)
        }),
    };
    println!(
        "Throughput: {:.2} requests/s, {:.2} total tokens/s, {:.2} output tokens/s\n\
         ({} requests, {} prompt + {} output tokens in {:.2} s; mean TTFT {:.1} ms, mean latency {:.1} ms; {} {} on {})",
        r.requests_per_s,
        r.total_tokens_per_s,
        r.output_tokens_per_s,
        r.num_requests,
        r.total_prompt_tokens,
        r.total_output_tokens,
        r.elapsed_s,
        r.mean_ttft_ms,
        r.mean_e2e_ms,
        r.model.name,
        r.model.dtype,
        r.model.device,
    );
    if let Some(p) = &args.output_json {
        super::serve::write_json(p, &r)?;
    }
    Ok(r)
}

/// Memory bandwidth in GB/s (bytes read + written by a copy, per second) of `device`.
pub fn measure_bandwidth(device: &str) -> anyhow::Result<f64> {
    if device == "cpu" {
        return Ok(host_copy_bandwidth(64 << 20, 0.3));
    }
    let dev = crate::loader::parse_device(device)?;
    let n = 256usize << 20; // f32 elements: 1 GiB
    let t = candle_core::Tensor::zeros(n, candle_core::DType::F32, &dev)?;
    let _ = t.copy()?;
    dev.synchronize()?;
    let iters = 20;
    let started = Instant::now();
    for _ in 0..iters {
        let _c = t.copy()?;
    }
    dev.synchronize()?;
    let secs = started.elapsed().as_secs_f64();
    Ok(2.0 * (n * 4 * iters) as f64 / secs / 1e9)
}

/// A memcpy loop over two `bytes`-sized buffers for at least `min_secs`.
pub fn host_copy_bandwidth(bytes: usize, min_secs: f64) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // touch the pages
    let started = Instant::now();
    let mut iters = 0usize;
    while iters < 3 || started.elapsed().as_secs_f64() < min_secs {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        iters += 1;
    }
    2.0 * (bytes * iters) as f64 / started.elapsed().as_secs_f64() / 1e9
}

#[derive(Debug, Serialize)]
pub struct LatencyIter {
    /// Submit → every request has its first token (the prefill of B×I tokens).
    pub prefill_ms: f64,
    /// Mean over requests of (finished − first token) / (output − 1).
    pub decode_step_ms: f64,
    /// Submit → the last request finished.
    pub e2e_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct LatencyResult {
    pub model: ModelInfo,
    pub batch_size: usize,
    pub input_len: usize,
    pub output_len: usize,
    pub iters: Vec<LatencyIter>,
    pub prefill_ms_mean: f64,
    pub decode_step_ms_mean: f64,
    pub decode_step_ms_p50: f64,
    pub e2e_ms_mean: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub bandwidth_gbps: f64,
    pub bandwidth_measured: bool,
    /// weight bytes ÷ bandwidth: the least time a decode step can take.
    pub roofline_step_ms: f64,
    /// roofline ÷ measured decode step.
    pub fraction_of_roofline: f64,
}

pub fn latency(args: &LatencyArgs) -> anyhow::Result<LatencyResult> {
    let (b, i, o) = (args.batch_size, args.input_len, args.output_len);
    if b == 0 || i == 0 || o < 2 {
        bail!("--batch-size and --input-len must be positive and --output-len at least 2");
    }
    let mut eargs = args.engine.clone();
    eargs.sched.max_num_seqs = eargs.sched.max_num_seqs.max(b);
    if eargs.sched.max_num_batched_tokens < b * i {
        eprintln!(
            "note: raising --max-num-batched-tokens to {} so the batch's prefill is one step",
            b * i
        );
        eargs.sched.max_num_batched_tokens = b * i;
    }
    let (engine, info) = start(&eargs)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let vocab = usable_vocab(&engine);
    let mut rng = ChaCha8Rng::seed_from_u64(args.engine.model.seed);
    let mut iters = Vec::new();
    for it in 0..args.num_iters_warmup + args.num_iters {
        // Fresh prompts each time: no prefix-cache hits between iterations.
        let prompts = (0..b)
            .map(|_| (random_ids(&mut rng, i, vocab), o))
            .collect();
        let done = run_batch(&rt, &engine, prompts, &format!("lat{it}"))?;
        if it < args.num_iters_warmup {
            continue;
        }
        let times: Vec<_> = done
            .iter()
            .map(|d| d.times.context("no request times"))
            .collect::<anyhow::Result<_>>()?;
        let arrival = times
            .iter()
            .map(|t| t.arrival)
            .min()
            .context("no requests")?;
        let last_first = times
            .iter()
            .filter_map(|t| t.first_token)
            .max()
            .context("no first token")?;
        let last_done = times
            .iter()
            .filter_map(|t| t.finished)
            .max()
            .context("not finished")?;
        let steps: Vec<f64> = done
            .iter()
            .zip(&times)
            .filter_map(|(d, t)| {
                let n = d.num_generated_tokens();
                (n > 1).then_some(())?;
                Some((t.finished? - t.first_token?).as_secs_f64() / (n - 1) as f64)
            })
            .collect();
        iters.push(LatencyIter {
            prefill_ms: (last_first - arrival).as_secs_f64() * 1e3,
            decode_step_ms: steps.iter().sum::<f64>() / steps.len().max(1) as f64 * 1e3,
            e2e_ms: (last_done - arrival).as_secs_f64() * 1e3,
        });
    }
    let mean = |f: fn(&LatencyIter) -> f64| iters.iter().map(f).sum::<f64>() / iters.len() as f64;
    let mut steps: Vec<f64> = iters.iter().map(|x| x.decode_step_ms).collect();
    steps.sort_by(f64::total_cmp);
    let prefill = mean(|x| x.prefill_ms);
    let step = mean(|x| x.decode_step_ms);
    let (bw, measured) = match args.bandwidth_gbps {
        Some(g) => (g, false),
        None => (measure_bandwidth(&args.engine.model.device)?, true),
    };
    let roofline_ms = info.weight_bytes as f64 / (bw * 1e9) * 1e3;
    let r = LatencyResult {
        batch_size: b,
        input_len: i,
        output_len: o,
        prefill_ms_mean: prefill,
        decode_step_ms_mean: step,
        decode_step_ms_p50: percentile(&steps, 50.0).unwrap_or(0.0),
        e2e_ms_mean: mean(|x| x.e2e_ms),
        prefill_tokens_per_s: (b * i) as f64 / (prefill / 1e3),
        decode_tokens_per_s: b as f64 / (step / 1e3),
        bandwidth_gbps: bw,
        bandwidth_measured: measured,
        roofline_step_ms: roofline_ms,
        fraction_of_roofline: roofline_ms / step,
        model: info,
        iters,
    };
    println!("{}", latency_table(&r));
    if let Some(p) = &args.output_json {
        super::serve::write_json(p, &r)?;
    }
    Ok(r)
}

fn latency_table(r: &LatencyResult) -> String {
    let m = &r.model;
    format!(
        "{:=^62}\n\
         {:<40}{:>22}\n{:<40}{:>22}\n{:<40}{:>22}\n\
         {:<40}{:>22.2}\n{:<40}{:>22.1}\n\
         {:<40}{:>22.3}\n{:<40}{:>22.3}\n{:<40}{:>22.1}\n{:<40}{:>22.2}\n\
         {:-^62}\n\
         {:<40}{:>22}\n{:<40}{:>22}\n{:<40}{:>22.3}\n{:<40}{:>22.1}\n{:=^62}",
        " Latency Benchmark Result ",
        "Model:",
        format!("{} ({}, {})", short(&m.name), m.dtype, m.device),
        "Batch × input → output:",
        format!("{} × {} → {}", r.batch_size, r.input_len, r.output_len),
        "Iterations:",
        r.iters.len(),
        "Prefill of the batch (ms, mean):",
        r.prefill_ms_mean,
        "Prefill throughput (tok/s):",
        r.prefill_tokens_per_s,
        "Decode step (ms, mean):",
        r.decode_step_ms_mean,
        "Decode step (ms, p50):",
        r.decode_step_ms_p50,
        "Decode throughput (tok/s):",
        r.decode_tokens_per_s,
        "Batch end-to-end (ms, mean):",
        r.e2e_ms_mean,
        " Roofline ",
        "Weights:",
        format!(
            "{:.3} GB ({} params)",
            m.weight_bytes as f64 / 1e9,
            m.parameters
        ),
        "Bandwidth (GB/s, read + written):",
        format!(
            "{:.1} ({})",
            r.bandwidth_gbps,
            if r.bandwidth_measured {
                "measured"
            } else {
                "given"
            }
        ),
        "Floor per decode step (ms):",
        r.roofline_step_ms,
        "Decode at % of the floor:",
        r.fraction_of_roofline * 100.0,
        "",
    )
}

fn short(s: &str) -> &str {
    s.rsplit('/').find(|p| !p.is_empty()).unwrap_or(s)
}
