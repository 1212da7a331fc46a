//! Prometheus metrics (`indus_*`), rendered by GET /metrics. Each server owns its own
//! recorder (no global one), so several servers can live in one process (tests).
//! Engine gauges are refreshed from `EngineHandle::stats()` at scrape time.

use crate::embed::PoolingStats;
use crate::engine::{EngineHandle, RequestTimes};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

static META: Metadata<'static> = Metadata::new("indus::server", Level::INFO, Some("indus::server"));

pub const REQUESTS: &str = "indus_requests_total";
pub const PROMPT_TOKENS: &str = "indus_prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "indus_generation_tokens_total";
pub const TTFT: &str = "indus_time_to_first_token_seconds";
pub const TPOT: &str = "indus_time_per_output_token_seconds";
pub const E2E: &str = "indus_e2e_request_latency_seconds";
pub const QUEUE: &str = "indus_request_queue_time_seconds";
pub const RUNNING: &str = "indus_num_requests_running";
pub const WAITING: &str = "indus_num_requests_waiting";
pub const KV_USAGE: &str = "indus_kv_cache_usage_perc";
pub const KV_FREE: &str = "indus_kv_cache_free_blocks";
pub const KV_TOTAL: &str = "indus_kv_cache_total_blocks";
/// Always 1; its labels carry the KV-cache layout, as vLLM's `vllm:cache_config_info` does
/// for the Gateway API Inference Extension's prefix-aware endpoint picker.
pub const CACHE_CONFIG: &str = "indus_cache_config_info";
pub const PREFIX_QUERIES: &str = "indus_prefix_cache_queries_total";
pub const PREFIX_HITS: &str = "indus_prefix_cache_hits_total";
pub const PREFIX_HIT_RATE: &str = "indus_prefix_cache_hit_rate";
pub const PREEMPTIONS: &str = "indus_num_preemptions_total";
pub const KEY_REQUESTS: &str = "indus_api_key_requests_total";
pub const KEY_TOKENS: &str = "indus_api_key_tokens_total";
pub const QUOTA_REJECTIONS: &str = "indus_quota_rejections_total";
pub const QUOTA_USED_TODAY: &str = "indus_quota_tokens_used_today";
pub const QUOTA_BUDGET: &str = "indus_quota_daily_token_budget";
pub const QUOTA_IN_FLIGHT: &str = "indus_quota_requests_in_flight";
pub const POOLING_IN_FLIGHT: &str = "indus_encoder_requests_in_flight";
pub const POOLING_BATCHES: &str = "indus_encoder_batches_total";
pub const POOLING_INPUTS: &str = "indus_encoder_inputs_total";
pub const POOLING_TOKENS: &str = "indus_encoder_tokens_total";
pub const POOLING_PADDED: &str = "indus_encoder_padded_tokens_total";
pub const POOLING_BUSY: &str = "indus_encoder_busy_microseconds_total";

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const TPOT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
];

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
    queue: Histogram,
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge,
    kv_free: Gauge,
    kv_total: Gauge,
    prefix_queries: Counter,
    prefix_hits: Counter,
    prefix_hit_rate: Gauge,
    preemptions: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(TTFT.into()), TTFT_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TPOT.into()), TPOT_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(E2E.into()), LATENCY_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(QUEUE.into()), LATENCY_BUCKETS))
            .expect("bucket lists are non-empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            recorder.describe_counter(KeyName::from_const_str(name), unit, help.into());
        };
        describe(
            REQUESTS,
            None,
            "Requests finished, by finish reason and HTTP status.",
        );
        describe(PROMPT_TOKENS, None, "Prompt tokens processed.");
        describe(GENERATION_TOKENS, None, "Tokens generated.");
        describe(
            PREFIX_QUERIES,
            None,
            "Prompt blocks looked up in the prefix cache.",
        );
        describe(
            PREFIX_HITS,
            None,
            "Prompt blocks found in the prefix cache.",
        );
        describe(
            PREEMPTIONS,
            None,
            "Sequences preempted for lack of KV blocks.",
        );
        describe(KEY_REQUESTS, None, "Requests per API key name.");
        describe(
            QUOTA_REJECTIONS,
            None,
            "Requests refused with 429 for a key's quota, by key name and the limit (keys-file field).",
        );
        for (name, help) in [
            (
                QUOTA_USED_TODAY,
                "Tokens (prompt + completion) a key with quotas used today (UTC).",
            ),
            (QUOTA_BUDGET, "A key's daily token budget."),
            (
                QUOTA_IN_FLIGHT,
                "Requests in flight of a key with quotas (max_concurrent_requests counts these).",
            ),
        ] {
            recorder.describe_gauge(KeyName::from_const_str(name), None, help.into());
        }
        describe(POOLING_BATCHES, None, "Encoder forward batches, per model.");
        describe(
            POOLING_INPUTS,
            None,
            "Inputs embedded or scored, per model.",
        );
        describe(
            POOLING_TOKENS,
            None,
            "Input tokens run by an encoder, per model.",
        );
        describe(
            POOLING_PADDED,
            None,
            "Padded tokens run by an encoder (batch size x longest input), per model.",
        );
        describe(
            POOLING_BUSY,
            Some(Unit::Microseconds),
            "Microseconds an encoder spent in forward passes, per model.",
        );
        recorder.describe_gauge(
            KeyName::from_const_str(POOLING_IN_FLIGHT),
            None,
            "Embedding/rerank requests queued or running, per model.".into(),
        );
        describe(
            KEY_TOKENS,
            None,
            "Tokens per API key name and kind (prompt|completion).",
        );
        let hist = |name: &'static str, help: &'static str| {
            recorder.describe_histogram(
                KeyName::from_const_str(name),
                Some(Unit::Seconds),
                help.into(),
            );
            recorder.register_histogram(&Key::from_static_name(name), &META)
        };
        let ttft = hist(TTFT, "Time from arrival to the first generated token.");
        let tpot = hist(TPOT, "Mean time between output tokens of a request.");
        let e2e = hist(E2E, "Time from arrival to the last token.");
        let queue = hist(QUEUE, "Time from arrival to first being scheduled.");
        let gauge = |name: &'static str, help: &'static str| {
            recorder.describe_gauge(KeyName::from_const_str(name), None, help.into());
            recorder.register_gauge(&Key::from_static_name(name), &META)
        };
        let running = gauge(RUNNING, "Sequences in the running batch.");
        let waiting = gauge(WAITING, "Sequences waiting to be scheduled.");
        let kv_usage = gauge(KV_USAGE, "Fraction of KV-cache blocks in use (0..1).");
        let kv_free = gauge(KV_FREE, "Free KV-cache blocks.");
        let kv_total = gauge(KV_TOTAL, "KV-cache blocks in all.");
        recorder.describe_gauge(
            KeyName::from_const_str(CACHE_CONFIG),
            None,
            "KV-cache layout in the labels (block_size in tokens, num_gpu_blocks); always 1."
                .into(),
        );
        let prefix_hit_rate = gauge(PREFIX_HIT_RATE, "Prefix-cache hits / queries since start.");
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &META);
        Self {
            prompt_tokens: counter(PROMPT_TOKENS),
            generation_tokens: counter(GENERATION_TOKENS),
            prefix_queries: counter(PREFIX_QUERIES),
            prefix_hits: counter(PREFIX_HITS),
            preemptions: counter(PREEMPTIONS),
            ttft,
            tpot,
            e2e,
            queue,
            running,
            waiting,
            kv_usage,
            kv_free,
            kv_total,
            prefix_hit_rate,
            recorder,
            handle,
        }
    }

    fn labelled_counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    /// A request that ended with an error before reaching the engine (e.g. 401).
    pub fn count_rejected(&self, status: &str) {
        self.count_request("error", status);
    }

    pub fn count_request(&self, finish_reason: &str, status: &str) {
        self.labelled_counter(
            REQUESTS,
            vec![
                Label::new("finish_reason", finish_reason.to_string()),
                Label::new("status", status.to_string()),
            ],
        )
        .increment(1);
    }

    /// A request refused for its key's quota; `reason` names the limit.
    pub fn count_quota_rejection(&self, key_name: &str, reason: &'static str) {
        self.labelled_counter(
            QUOTA_REJECTIONS,
            vec![
                Label::new("key_name", key_name.to_string()),
                Label::new("reason", reason),
            ],
        )
        .increment(1);
    }

    /// A key's quota standing, refreshed at scrape time.
    pub fn set_quota(&self, key_name: &str, used_today: u64, budget: Option<u64>, in_flight: u64) {
        let gauge = |name: &'static str| {
            self.recorder.register_gauge(
                &Key::from_parts(name, vec![Label::new("key_name", key_name.to_string())]),
                &META,
            )
        };
        gauge(QUOTA_USED_TODAY).set(used_today as f64);
        gauge(QUOTA_IN_FLIGHT).set(in_flight as f64);
        if let Some(b) = budget {
            gauge(QUOTA_BUDGET).set(b as f64);
        }
    }

    /// Tokens of one finished HTTP request, globally and for its key.
    pub fn count_tokens(&self, key_name: &str, prompt: usize, completion: usize) {
        self.prompt_tokens.increment(prompt as u64);
        self.generation_tokens.increment(completion as u64);
        self.labelled_counter(
            KEY_REQUESTS,
            vec![Label::new("key_name", key_name.to_string())],
        )
        .increment(1);
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            self.labelled_counter(
                KEY_TOKENS,
                vec![
                    Label::new("key_name", key_name.to_string()),
                    Label::new("kind", kind),
                ],
            )
            .increment(n as u64);
        }
    }

    /// Latencies of one finished engine request that generated `generated` tokens (per choice).
    pub fn observe_times(&self, t: &RequestTimes, generated: usize) {
        if let Some(s) = t.first_scheduled {
            self.queue.record(s.duration_since(t.arrival).as_secs_f64());
        }
        if let Some(f) = t.first_token {
            self.ttft.record(f.duration_since(t.arrival).as_secs_f64());
        }
        if let Some(end) = t.finished {
            self.e2e.record(end.duration_since(t.arrival).as_secs_f64());
            if let Some(f) = t.first_token
                && generated > 1
            {
                self.tpot
                    .record(end.duration_since(f).as_secs_f64() / (generated - 1) as f64);
            }
        }
    }

    /// Refreshes the engine gauges and renders the Prometheus text.
    pub fn render(
        &self,
        engine: Option<&EngineHandle>,
        pooling: &[(&str, PoolingStats)],
    ) -> String {
        for (model, p) in pooling {
            let key = |name: &'static str| {
                Key::from_parts(name, vec![Label::new("model", model.to_string())])
            };
            self.recorder
                .register_gauge(&key(POOLING_IN_FLIGHT), &META)
                .set(p.in_flight as f64);
            for (name, v) in [
                (POOLING_BATCHES, p.batches),
                (POOLING_INPUTS, p.inputs),
                (POOLING_TOKENS, p.tokens),
                (POOLING_PADDED, p.padded_tokens),
            ] {
                self.recorder
                    .register_counter(&key(name), &META)
                    .absolute(v);
            }
            self.recorder
                .register_counter(&key(POOLING_BUSY), &META)
                .absolute((p.busy_seconds * 1e6) as u64);
        }
        if let Some(engine) = engine {
            let s = engine.stats();
            let layout = Key::from_parts(
                CACHE_CONFIG,
                vec![
                    Label::new("block_size", engine.limits().block_size.to_string()),
                    Label::new("num_gpu_blocks", s.total_blocks.to_string()),
                ],
            );
            self.recorder.register_gauge(&layout, &META).set(1.0);
            self.running.set(s.running as f64);
            // Requests still in the engine's channel are waiting too.
            self.waiting
                .set(s.waiting.max(engine.num_waiting() as u64) as f64);
            self.kv_usage.set(s.kv_usage());
            self.kv_free.set(s.free_blocks as f64);
            self.kv_total.set(s.total_blocks as f64);
            self.prefix_queries.absolute(s.prefix_queries);
            self.prefix_hits.absolute(s.prefix_hits);
            self.preemptions.absolute(s.preemptions);
            self.prefix_hit_rate.set(if s.prefix_queries == 0 {
                0.0
            } else {
                s.prefix_hits as f64 / s.prefix_queries as f64
            });
        }
        self.handle.render()
    }

    /// Drains histogram buffers; call every few seconds.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_servers_keep_separate_metrics() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.count_request("stop", "200");
        a.count_tokens("team-a", 3, 5);
        let ra = a.render(None, &[]);
        let rb = b.render(None, &[]);
        assert!(
            ra.contains(r#"indus_requests_total{finish_reason="stop",status="200"} 1"#),
            "{ra}"
        );
        assert!(
            ra.contains(r#"indus_api_key_tokens_total{key_name="team-a",kind="completion"} 5"#),
            "{ra}"
        );
        assert!(!rb.contains("indus_requests_total{"), "{rb}");
    }

    #[test]
    fn quota_metrics() {
        let m = Metrics::new();
        m.count_quota_rejection("team-a", "requests_per_minute");
        m.set_quota("team-a", 42, Some(100), 1);
        let r = m.render(None, &[]);
        assert!(
            r.contains(
                r#"indus_quota_rejections_total{key_name="team-a",reason="requests_per_minute"} 1"#
            ),
            "{r}"
        );
        assert!(
            r.contains(r#"indus_quota_tokens_used_today{key_name="team-a"} 42"#),
            "{r}"
        );
        assert!(
            r.contains(r#"indus_quota_daily_token_budget{key_name="team-a"} 100"#),
            "{r}"
        );
    }

    #[test]
    fn histograms_render_buckets() {
        let m = Metrics::new();
        let now = std::time::Instant::now();
        m.observe_times(
            &RequestTimes {
                arrival: now,
                first_scheduled: Some(now),
                first_token: Some(now),
                finished: Some(now),
            },
            3,
        );
        let r = m.render(None, &[]);
        assert!(
            r.contains("indus_time_to_first_token_seconds_bucket"),
            "{r}"
        );
        assert!(
            r.contains("indus_request_queue_time_seconds_count 1"),
            "{r}"
        );
    }
}
