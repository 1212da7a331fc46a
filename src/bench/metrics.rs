//! Per-request records and their summary: exact percentiles over the samples (linear
//! interpolation between closest ranks, as numpy's default), throughput and goodput.

use serde::{Deserialize, Serialize};

/// What one request measured. Times are seconds; `start_s`, `first_token_s` and `end_s` are
/// offsets from the start of the benchmark (one monotonic clock, `Instant`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Position in the dataset.
    pub index: usize,
    /// Prompt length the dataset meant (tokens; an estimate for text without a tokenizer).
    pub prompt_len: usize,
    /// Prompt tokens the server reported in `usage`, when it did.
    pub prompt_tokens: Option<usize>,
    /// `max_tokens` asked for.
    pub output_len: usize,
    /// Tokens generated: `usage.completion_tokens` when present, else content chunks.
    pub output_tokens: usize,
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    pub start_s: f64,
    pub first_token_s: Option<f64>,
    pub end_s: f64,
    /// Time to first token (first non-empty content chunk).
    pub ttft_s: Option<f64>,
    /// End-to-end latency: request sent → stream closed.
    pub latency_s: f64,
    /// Inter-token latencies: the gaps between successive content chunks.
    pub itl_s: Vec<f64>,
    /// Times the request was sent again because its pooled connection was closed before
    /// the server answered (at most once; the request still counts once).
    #[serde(default)]
    pub retries: usize,
}

impl RequestRecord {
    /// Time per output token after the first: (latency − TTFT) / (output tokens − 1).
    pub fn tpot_s(&self) -> Option<f64> {
        let ttft = self.ttft_s?;
        (self.output_tokens > 1).then(|| (self.latency_s - ttft) / (self.output_tokens - 1) as f64)
    }

    /// Prompt tokens: the server's count when known, else the dataset's.
    pub fn input_tokens(&self) -> usize {
        self.prompt_tokens.unwrap_or(self.prompt_len)
    }
}

/// Statistics of one metric, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub mean_ms: f64,
    pub std_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Further percentiles asked for with --percentiles, as (p, value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<(f64, f64)>,
}

/// The p-th percentile (0..=100) of sorted samples, interpolating linearly between the
/// closest ranks (numpy's default). None for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

impl Stats {
    /// Statistics of samples given in seconds, reported in milliseconds.
    pub fn from_secs(samples: impl IntoIterator<Item = f64>, extra_percentiles: &[f64]) -> Self {
        let mut v: Vec<f64> = samples
            .into_iter()
            .filter(|x| x.is_finite())
            .map(|s| s * 1e3)
            .collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        let pct = |p| percentile(&v, p).unwrap_or(0.0);
        Self {
            count: v.len(),
            mean_ms: mean,
            std_ms: var.sqrt(),
            min_ms: v[0],
            max_ms: v[v.len() - 1],
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            extra: extra_percentiles
                .iter()
                .filter(|p| ![50.0, 90.0, 99.0].contains(*p))
                .map(|&p| (p, pct(p)))
                .collect(),
        }
    }
}

/// Service-level objectives for goodput: a request is "good" when it succeeded and meets
/// every objective that is set.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2el_ms.is_some()
    }

    pub fn met_by(&self, r: &RequestRecord) -> bool {
        if !r.success {
            return false;
        }
        let ok = |limit: Option<f64>, value: Option<f64>| match limit {
            None => true,
            Some(l) => value.is_some_and(|v| v * 1e3 <= l),
        };
        // A one-token answer has no TPOT; it cannot miss a TPOT objective.
        let tpot = r.tpot_s().or(Some(0.0));
        ok(self.ttft_ms, r.ttft_s) && ok(self.tpot_ms, tpot) && ok(self.e2el_ms, Some(r.latency_s))
    }
}

/// The benchmark's result over all measured requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub completed: usize,
    pub failed: usize,
    /// Wall time from the first request sent to the last one finished.
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Requests/s that met every SLO (absent when none is set).
    pub goodput: Option<f64>,
    pub slo: Slo,
    /// Most requests in flight at once.
    pub max_concurrency_observed: usize,
    pub ttft: Stats,
    pub tpot: Stats,
    pub itl: Stats,
    pub e2el: Stats,
}

impl Summary {
    pub fn compute(records: &[RequestRecord], duration_s: f64, slo: Slo, extra: &[f64]) -> Self {
        let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.success).collect();
        let completed = ok.len();
        let total_input_tokens = ok.iter().map(|r| r.input_tokens()).sum();
        let total_output_tokens = ok.iter().map(|r| r.output_tokens).sum();
        let per_s = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        let good = records.iter().filter(|r| slo.met_by(r)).count();
        Self {
            completed,
            failed: records.len() - completed,
            duration_s,
            total_input_tokens,
            total_output_tokens,
            request_throughput: per_s(completed as f64),
            output_throughput: per_s(total_output_tokens as f64),
            total_token_throughput: per_s((total_input_tokens + total_output_tokens) as f64),
            goodput: slo.is_set().then(|| per_s(good as f64)),
            slo,
            max_concurrency_observed: max_in_flight(records),
            ttft: Stats::from_secs(ok.iter().filter_map(|r| r.ttft_s), extra),
            tpot: Stats::from_secs(ok.iter().filter_map(|r| r.tpot_s()), extra),
            itl: Stats::from_secs(ok.iter().flat_map(|r| r.itl_s.iter().copied()), extra),
            e2el: Stats::from_secs(ok.iter().map(|r| r.latency_s), extra),
        }
    }
}

/// The most requests whose [start, end] intervals overlap at one instant.
pub fn max_in_flight(records: &[RequestRecord]) -> usize {
    let mut events: Vec<(f64, i32)> = records
        .iter()
        .flat_map(|r| [(r.start_s, 1), (r.end_s, -1)])
        .collect();
    // Ends before starts at the same instant.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(5.5));
        assert!((percentile(&v, 90.0).unwrap() - 9.1).abs() < 1e-12);
        assert!((percentile(&v, 99.0).unwrap() - 9.91).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(10.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn rec(start: f64, ttft: f64, lat: f64, out: usize) -> RequestRecord {
        RequestRecord {
            prompt_len: 10,
            output_len: out,
            output_tokens: out,
            success: true,
            start_s: start,
            first_token_s: Some(start + ttft),
            end_s: start + lat,
            ttft_s: Some(ttft),
            latency_s: lat,
            itl_s: vec![(lat - ttft) / (out - 1) as f64; out - 1],
            ..Default::default()
        }
    }

    #[test]
    fn summary_counts_throughput_and_goodput() {
        let mut rs = vec![rec(0.0, 0.1, 1.1, 11), rec(0.5, 0.3, 2.3, 11)];
        rs.push(RequestRecord {
            success: false,
            start_s: 0.2,
            end_s: 0.3,
            error: Some("boom".into()),
            ..Default::default()
        });
        let slo = Slo {
            ttft_ms: Some(200.0),
            tpot_ms: None,
            e2el_ms: None,
        };
        let s = Summary::compute(&rs, 2.0, slo, &[]);
        assert_eq!((s.completed, s.failed), (2, 1));
        assert_eq!(s.total_output_tokens, 22);
        assert_eq!(s.total_input_tokens, 20);
        assert!((s.output_throughput - 11.0).abs() < 1e-9);
        assert!((s.goodput.unwrap() - 0.5).abs() < 1e-9);
        assert!((s.tpot.mean_ms - 150.0).abs() < 1e-9);
        assert!((s.ttft.p50_ms - 200.0).abs() < 1e-9);
        assert_eq!(s.max_concurrency_observed, 2);
    }
}
