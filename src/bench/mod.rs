//! `indus bench`: a load generator for any OpenAI-compatible endpoint (Indus, vLLM, TGI,
//! llama.cpp) measuring TTFT, TPOT, ITL and end-to-end latency per request; sweeps over
//! concurrency with plots; and offline throughput/latency benchmarks of the engine itself.
//!
//! - [`serve`]: `bench serve`, the load generator (Poisson arrivals, concurrency limit).
//! - [`client`]: one streamed request, timed chunk by chunk (SSE parser, request bodies).
//! - [`dataset`]: random, ShareGPT and shared-prefix prompts from a seeded RNG.
//! - [`metrics`]: per-request records, exact percentiles, throughput and goodput.
//! - [`sweep`]: `bench sweep` / `bench plot`: Markdown table and SVG plots.
//! - [`offline`]: `bench throughput` and `bench latency` (with the roofline floor).
//! - [`stub`]: a stub OpenAI server with injected delays, for tests and self-cost checks.

pub mod client;
pub mod dataset;
pub mod metrics;
pub mod offline;
pub mod report;
pub mod serve;
pub mod stub;
pub mod sweep;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Load-test an OpenAI-compatible server: TTFT, TPOT, ITL, latency, throughput, goodput.
    Serve(Box<serve::ServeBenchArgs>),
    /// Offline: N requests at once straight into the engine (no HTTP); tokens/s.
    Throughput(Box<offline::ThroughputArgs>),
    /// Offline: prefill and per-step decode latency of one batch, beside the roofline floor.
    Latency(Box<offline::LatencyArgs>),
    /// `serve` over a list of concurrencies; Markdown table and SVG plots.
    Sweep(Box<sweep::SweepArgs>),
    /// Draw sweep.json files of several runs (say Indus and vLLM) on the same plots.
    Plot(sweep::PlotArgs),
    /// A stub OpenAI server with injected delays (to measure the load generator itself).
    #[command(hide = true)]
    Stub(stub::StubArgs),
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs a bench subcommand (blocking; it makes its own runtime where it needs one).
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Serve(a) => {
            let r = runtime()?.block_on(serve::run_and_report(&a))?;
            if r.summary.completed == 0 {
                anyhow::bail!("every request failed");
            }
            Ok(())
        }
        BenchCommand::Throughput(a) => offline::throughput(&a).map(|_| ()),
        BenchCommand::Latency(a) => offline::latency(&a).map(|_| ()),
        BenchCommand::Sweep(a) => runtime()?.block_on(sweep::run(&a)).map(|_| ()),
        BenchCommand::Plot(a) => sweep::plot(&a).map(|_| ()),
        BenchCommand::Stub(a) => runtime()?.block_on(stub::serve(&a)),
    }
}
