//! `indus bench serve`: the load generator. Requests arrive as a Poisson process (or a
//! gamma process with --burstiness, or all at once for --request-rate inf), at most
//! --max-concurrency in flight, each streamed and timed by [`client::send`].

use super::client::{self, ApiKind, RequestSettings};
use super::dataset::{self, DatasetArgs, DatasetKind, SampleRequest};
use super::metrics::{RequestRecord, Slo, Summary};
use super::report;
use anyhow::{Context, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags of `indus bench serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeBenchArgs {
    /// Server address, e.g. http://127.0.0.1:8000 (a trailing /v1 is fine).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub base_url: String,
    /// API path; a path with "chat" in it is sent chat messages.
    #[arg(long, default_value = "/v1/completions")]
    pub endpoint: String,
    /// Model name to put in the requests.
    #[arg(long)]
    pub model: String,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Requests to measure.
    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,
    /// Mean arrivals per second (Poisson), or inf to send all at once.
    #[arg(long, default_value_t = f64::INFINITY)]
    pub request_rate: f64,
    /// Gamma shape of inter-arrival times: 1 is Poisson, below 1 burstier, above 1 steadier.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Most requests in flight at once (unlimited if not set).
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Ask the server to ignore EOS so every request generates exactly its output length.
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of the prompts and of the arrival times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Requests sent (and waited for) before measuring; not counted.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// Goodput: requests whose TTFT is at most this many milliseconds.
    #[arg(long)]
    pub slo_ttft_ms: Option<f64>,
    /// Goodput: requests whose TPOT is at most this many milliseconds.
    #[arg(long)]
    pub slo_tpot_ms: Option<f64>,
    /// Goodput: requests whose end-to-end latency is at most this many milliseconds.
    #[arg(long)]
    pub slo_e2el_ms: Option<f64>,
    /// Extra percentiles to report, e.g. 25,75,99.9 (p50, p90, p99 always are).
    #[arg(long, value_delimiter = ',')]
    pub percentiles: Vec<f64>,
    /// Write the summary and every request's figures to this JSON file.
    #[arg(long)]
    pub output_json: Option<PathBuf>,
    /// Name of this run in reports and plots (e.g. indus, vllm).
    #[arg(long)]
    pub label: Option<String>,
    /// JSON object merged into every request body, e.g. '{"top_k": 1}'.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub request_timeout: f64,
    /// Stop sending new requests after this many seconds (those in flight finish).
    #[arg(long)]
    pub max_duration: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

impl ServeBenchArgs {
    /// Defaults for a server at `base_url` serving `model` (for tests and sweeps).
    pub fn new(base_url: &str, model: &str) -> Self {
        Self {
            base_url: base_url.into(),
            endpoint: "/v1/completions".into(),
            model: model.into(),
            api_key: None,
            dataset: DatasetArgs::default(),
            num_prompts: 1000,
            request_rate: f64::INFINITY,
            burstiness: 1.0,
            max_concurrency: None,
            ignore_eos: false,
            temperature: 0.0,
            seed: 0,
            warmup: 0,
            slo_ttft_ms: None,
            slo_tpot_ms: None,
            slo_e2el_ms: None,
            percentiles: Vec::new(),
            output_json: None,
            label: None,
            extra_body: None,
            request_timeout: 3600.0,
            max_duration: None,
            no_progress: true,
        }
    }

    pub fn url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let path = self.endpoint.trim_start_matches('/');
        match (base.strip_suffix("/v1"), path.strip_prefix("v1/")) {
            (Some(b), Some(_)) => format!("{b}/{path}"),
            _ => format!("{base}/{path}"),
        }
    }

    fn slo(&self) -> Slo {
        Slo {
            ttft_ms: self.slo_ttft_ms,
            tpot_ms: self.slo_tpot_ms,
            e2el_ms: self.slo_e2el_ms,
        }
    }
}

/// The run's settings, echoed into the JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub label: Option<String>,
    pub url: String,
    pub model: String,
    pub dataset: String,
    pub num_prompts: usize,
    /// null for inf.
    pub request_rate: Option<f64>,
    pub burstiness: f64,
    pub max_concurrency: Option<usize>,
    pub ignore_eos: bool,
    pub seed: u64,
    pub warmup: usize,
    /// Seconds since the Unix epoch when the measured part started.
    pub started_unix_s: f64,
}

/// What `bench serve` writes with --output-json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeResult {
    pub info: RunInfo,
    pub summary: Summary,
    pub requests: Vec<RequestRecord>,
}

/// Arrival offsets (seconds from the start) of `n` requests.
pub fn arrival_times(n: usize, rate: f64, burstiness: f64, seed: u64) -> anyhow::Result<Vec<f64>> {
    if rate.is_infinite() {
        return Ok(vec![0.0; n]);
    }
    if rate.is_nan() || rate <= 0.0 {
        bail!("--request-rate must be positive or inf");
    }
    if burstiness.is_nan() || burstiness <= 0.0 {
        bail!("--burstiness must be positive");
    }
    // Not the prompts' stream: changing the rate must not change the prompts.
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let gaps: Box<dyn FnMut(&mut ChaCha8Rng) -> f64> = if burstiness == 1.0 {
        let exp = Exp::new(rate)?;
        Box::new(move |r| exp.sample(r))
    } else {
        let gamma = Gamma::new(burstiness, 1.0 / (rate * burstiness))?;
        Box::new(move |r| gamma.sample(r))
    };
    let mut gaps = gaps;
    let mut t = 0.0;
    Ok((0..n)
        .map(|_| {
            let at = t;
            t += gaps(&mut rng);
            at
        })
        .collect())
}

fn progress_bar(n: usize, hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} requests ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb
}

/// Sends `samples` concurrently (all at once, bounded by `limit`); for warm-up.
async fn send_all(
    client: &reqwest::Client,
    settings: &Arc<RequestSettings>,
    samples: Vec<SampleRequest>,
    limit: usize,
) -> Vec<RequestRecord> {
    let sem = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let t0 = Instant::now();
    let tasks: Vec<_> = samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (client, settings, sem) = (client.clone(), settings.clone(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let body = settings.body(&s);
                client::send(&client, &settings, body, &s, i, t0).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

/// Runs the benchmark; prints nothing (see [`run_and_report`]).
pub async fn run(args: &ServeBenchArgs) -> anyhow::Result<ServeResult> {
    if args.num_prompts == 0 {
        bail!("--num-prompts must be positive");
    }
    if args.max_concurrency == Some(0) {
        bail!("--max-concurrency must be positive");
    }
    let kind = ApiKind::from_path(&args.endpoint);
    let extra_body = match &args.extra_body {
        Some(s) => match serde_json::from_str::<serde_json::Value>(s)
            .context("--extra-body is not JSON")?
        {
            serde_json::Value::Object(m) => Some(m),
            _ => bail!("--extra-body must be a JSON object"),
        },
        None => None,
    };
    let settings = Arc::new(RequestSettings {
        url: args.url(),
        kind,
        model: args.model.clone(),
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        ignore_eos: args.ignore_eos,
        temperature: args.temperature,
        extra_body,
    });
    let chat = kind == ApiKind::Chat;
    let samples = dataset::build(&args.dataset, args.num_prompts, args.seed, chat)?;
    let arrivals = arrival_times(
        args.num_prompts,
        args.request_rate,
        args.burstiness,
        args.seed,
    )?;
    let client = client::http_client(Duration::from_secs_f64(args.request_timeout))?;

    if args.warmup > 0 {
        let warm = dataset::build(&args.dataset, args.warmup, args.seed.wrapping_add(1), chat)?;
        let limit = args.max_concurrency.unwrap_or(args.warmup);
        let done = send_all(&client, &settings, warm, limit).await;
        if let Some(bad) = done.iter().find(|r| !r.success) {
            let failed = done.iter().filter(|r| !r.success).count();
            bail!(
                "{failed} of {} warm-up requests to {} failed; the first: {}",
                done.len(),
                settings.url,
                bad.error.as_deref().unwrap_or("?")
            );
        }
    }

    // Bodies are built before the clock starts, so the client's own work stays small.
    let bodies: Vec<Vec<u8>> = samples.iter().map(|s| settings.body(s)).collect();
    let samples: Arc<Vec<SampleRequest>> = Arc::new(samples);
    let sem = args
        .max_concurrency
        .map(|c| Arc::new(tokio::sync::Semaphore::new(c)));
    let pb = progress_bar(args.num_prompts, args.no_progress);
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let t0 = Instant::now();
    let deadline = args.max_duration.map(|s| t0 + Duration::from_secs_f64(s));
    let mut tasks = Vec::with_capacity(args.num_prompts);
    for (i, (body, at)) in bodies.into_iter().zip(arrivals).enumerate() {
        let when = t0 + Duration::from_secs_f64(at);
        if deadline.is_some_and(|d| when > d) {
            break;
        }
        if when > Instant::now() {
            tokio::time::sleep_until(when.into()).await;
        }
        let (client, settings, samples, sem, pb) = (
            client.clone(),
            settings.clone(),
            samples.clone(),
            sem.clone(),
            pb.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = match sem {
                Some(s) => Some(s.acquire_owned().await),
                None => None,
            };
            let r = client::send(&client, &settings, body, &samples[i], i, t0).await;
            pb.inc(1);
            r
        }));
    }
    let mut records = Vec::with_capacity(tasks.len());
    for t in tasks {
        records.push(t.await.context("a request task panicked")?);
    }
    let duration = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let summary = Summary::compute(&records, duration, args.slo(), &args.percentiles);
    let info = RunInfo {
        label: args.label.clone(),
        url: settings.url.clone(),
        model: args.model.clone(),
        dataset: match args.dataset.dataset_name {
            DatasetKind::Random => "random",
            DatasetKind::Sharegpt => "sharegpt",
            DatasetKind::Prefix => "prefix",
        }
        .into(),
        num_prompts: args.num_prompts,
        request_rate: args.request_rate.is_finite().then_some(args.request_rate),
        burstiness: args.burstiness,
        max_concurrency: args.max_concurrency,
        ignore_eos: args.ignore_eos,
        seed: args.seed,
        warmup: args.warmup,
        started_unix_s,
    };
    Ok(ServeResult {
        info,
        summary,
        requests: records,
    })
}

/// Runs, prints the table to stdout and writes --output-json.
pub async fn run_and_report(args: &ServeBenchArgs) -> anyhow::Result<ServeResult> {
    let result = run(args).await?;
    println!("{}", report::serve_table(&result));
    if let Some(first) = result.requests.iter().find(|r| !r.success) {
        eprintln!(
            "warning: {} requests failed; the first: {}",
            result.summary.failed,
            first.error.as_deref().unwrap_or("?")
        );
    }
    if let Some(path) = &args.output_json {
        write_json(path, &result)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(result)
}

pub fn write_json<T: Serialize>(path: &std::path::Path, value: &T) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    serde_json::to_writer_pretty(std::io::BufWriter::new(f), value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_arrivals_have_the_asked_rate() {
        let a = arrival_times(20_000, 50.0, 1.0, 3).unwrap();
        assert_eq!(a[0], 0.0);
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        let rate = (a.len() - 1) as f64 / a[a.len() - 1];
        assert!((rate - 50.0).abs() < 1.5, "rate {rate}");
        // Exponential gaps: the standard deviation equals the mean.
        let gaps: Vec<f64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / mean - 1.0).abs() < 0.05, "cv {}", sd / mean);
        assert_eq!(a, arrival_times(20_000, 50.0, 1.0, 3).unwrap());
        let steady = arrival_times(20_000, 50.0, 4.0, 3).unwrap();
        let rate = (steady.len() - 1) as f64 / steady[steady.len() - 1];
        assert!((rate - 50.0).abs() < 1.5, "rate {rate}");
        assert!(arrival_times(3, f64::INFINITY, 1.0, 0).unwrap() == vec![0.0; 3]);
        assert!(arrival_times(3, 0.0, 1.0, 0).is_err());
    }

    #[test]
    fn cli_flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: ServeBenchArgs,
        }
        let c = Cli::parse_from([
            "x",
            "--model",
            "m",
            "--request-rate",
            "inf",
            "--random-input-len",
            "7",
            "--percentiles",
            "25,75",
            "--dataset-name",
            "prefix",
        ]);
        assert!(c.a.request_rate.is_infinite());
        assert_eq!(c.a.dataset.input_len, 7);
        assert_eq!(c.a.percentiles, vec![25.0, 75.0]);
        assert_eq!(c.a.dataset.dataset_name, DatasetKind::Prefix);
        let c = Cli::parse_from(["x", "--model", "m", "--request-rate", "2.5"]);
        assert_eq!(c.a.request_rate, 2.5);
    }

    #[test]
    fn url_joins_base_and_endpoint() {
        let mut a = ServeBenchArgs::new("http://h:1/", "m");
        assert_eq!(a.url(), "http://h:1/v1/completions");
        a.base_url = "http://h:1/v1".into();
        assert_eq!(a.url(), "http://h:1/v1/completions");
        a.endpoint = "/v1/chat/completions".into();
        assert_eq!(a.url(), "http://h:1/v1/chat/completions");
    }
}
