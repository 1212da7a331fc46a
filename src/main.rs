//! The `indus` command line: serve, generate, bench, download.

use anyhow::Context;
use clap::{Parser, Subcommand};
use indus::config::{CacheArgs, ModelArgs, SchedulerArgs};
use indus::engine::{Request, SamplingParams};

#[derive(Parser)]
#[command(
    name = "indus",
    version,
    about = "On-premise LLM inference serving runtime"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", env = "INDUS_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible HTTP API (the embedded tiny model if no MODEL is given).
    Serve(Box<indus::server::ServeArgs>),
    /// Generate a completion for one prompt and print it (a quick check of a model).
    Generate(Box<GenerateArgs>),
    /// Download a model from the Hugging Face hub into HF_HOME.
    Download(DownloadArgs),
    /// Benchmarks: load-test any OpenAI-compatible server, offline throughput and latency, sweeps with plots.
    Bench(indus::bench::BenchArgs),
}

#[derive(clap::Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    sched: SchedulerArgs,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Render the prompt as one user message with the chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long)]
    request_seed: Option<u64>,
    #[arg(long)]
    ignore_eos: bool,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

#[derive(clap::Args)]
struct DownloadArgs {
    /// Hub id, e.g. meta-llama/Llama-3.2-1B-Instruct.
    model: Option<String>,
    /// The hub id, as a flag (the same as the positional MODEL).
    #[arg(long = "model", id = "model_flag", value_name = "MODEL")]
    model_flag: Option<String>,
    #[arg(long)]
    revision: Option<String>,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<()> {
    let (engine, _) = indus::loader::start_engine(&args.model, &args.cache, &args.sched)?;
    let tok = engine.tokenizer().clone();
    let prompt_ids = if args.chat {
        let text = tok.apply_chat_template(
            &[indus::tokenizer::ChatMessage::new("user", &args.prompt)],
            true,
        )?;
        tok.encode(&text, false)?
    } else {
        tok.encode(&args.prompt, true)?
    };
    let params = SamplingParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.request_seed,
        ignore_eos: args.ignore_eos,
        stop: args.stop,
        ..SamplingParams::default()
    };
    let started = std::time::Instant::now();
    let out = engine
        .submit(Request::new("cli", prompt_ids, params))?
        .blocking_collect()?;
    let choice = out.choices.first().context("no output")?;
    println!("{}", choice.text);
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompt tokens, {} generated, finish_reason={}, {:.2}s, {:.1} tok/s]",
        out.num_prompt_tokens,
        choice.token_ids.len(),
        choice.finish_reason.map_or("none", |f| f.as_str()),
        secs,
        choice.token_ids.len() as f64 / secs
    );
    Ok(())
}

fn serve(args: indus::server::ServeArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(indus::server::serve(args))
}

fn download(args: DownloadArgs) -> anyhow::Result<()> {
    let repo_id = indus::config::one_model_name(args.model.as_deref(), args.model_flag.as_deref())?
        .context("name the hub id to download: indus download MODEL (or --model MODEL)")?
        .to_string();
    let source = indus_models::ModelSource::Hub {
        repo_id,
        revision: args.revision.unwrap_or_else(|| "main".into()),
    };
    let files = indus_models::ModelFiles::resolve(&source, true)?;
    println!(
        "{}",
        files
            .config
            .as_deref()
            .or(files.gguf.as_deref())
            .and_then(|p| p.parent())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}

/// glibc returns any freed block over its mmap threshold (128 KiB, raised as blocks are
/// freed) to the kernel, so every step's activation buffers (megabytes at an encoder batch)
/// came back as fresh pages, each faulted in and zeroed: 15 % of an all-MiniLM batch. Blocks
/// up to 64 MiB now come from the heap and freed memory stays there until 256 MiB is free, so
/// a steady load reuses the same pages; larger blocks (big weight tensors, loaded once) are
/// still mapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_buffers() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

fn main() -> anyhow::Result<()> {
    keep_freed_buffers();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match cli.command {
        Command::Serve(a) => serve(*a),
        Command::Generate(a) => generate(*a),
        Command::Download(a) => download(a),
        Command::Bench(a) => indus::bench::run(a),
    }
}
