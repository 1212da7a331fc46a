//! Text reports: the serving table (vLLM's layout, so results read side by side) and the
//! Markdown table of a sweep.

use super::metrics::Stats;
use super::serve::ServeResult;
use std::fmt::Write;

fn line(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name:<44}{value:>14}");
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "{:-^58}", format!(" {title} "));
}

fn stats(out: &mut String, short: &str, long: &str, s: &Stats) {
    section(out, long);
    line(
        out,
        &format!("Mean {short} (ms):"),
        format!("{:.2}", s.mean_ms),
    );
    line(
        out,
        &format!("Std {short} (ms):"),
        format!("{:.2}", s.std_ms),
    );
    line(
        out,
        &format!("P50 {short} (ms):"),
        format!("{:.2}", s.p50_ms),
    );
    line(
        out,
        &format!("P90 {short} (ms):"),
        format!("{:.2}", s.p90_ms),
    );
    line(
        out,
        &format!("P99 {short} (ms):"),
        format!("{:.2}", s.p99_ms),
    );
    for (p, v) in &s.extra {
        line(out, &format!("P{p} {short} (ms):"), format!("{v:.2}"));
    }
    line(
        out,
        &format!("Max {short} (ms):"),
        format!("{:.2}", s.max_ms),
    );
}

/// The table `bench serve` prints.
pub fn serve_table(r: &ServeResult) -> String {
    let s = &r.summary;
    let mut out = String::new();
    let _ = writeln!(out, "{:=^58}", " Serving Benchmark Result ");
    if let Some(label) = &r.info.label {
        line(&mut out, "Label:", label);
    }
    line(
        &mut out,
        "Request rate (req/s):",
        r.info
            .request_rate
            .map_or("inf".to_string(), |x| format!("{x:.2}")),
    );
    line(
        &mut out,
        "Max concurrency:",
        r.info
            .max_concurrency
            .map_or("unlimited".to_string(), |c| c.to_string()),
    );
    line(&mut out, "Successful requests:", s.completed);
    line(&mut out, "Failed requests:", s.failed);
    line(
        &mut out,
        "Benchmark duration (s):",
        format!("{:.2}", s.duration_s),
    );
    line(&mut out, "Total input tokens:", s.total_input_tokens);
    line(&mut out, "Total generated tokens:", s.total_output_tokens);
    line(
        &mut out,
        "Request throughput (req/s):",
        format!("{:.2}", s.request_throughput),
    );
    if let Some(g) = s.goodput {
        line(&mut out, "Request goodput (req/s):", format!("{g:.2}"));
    }
    line(
        &mut out,
        "Output token throughput (tok/s):",
        format!("{:.2}", s.output_throughput),
    );
    line(
        &mut out,
        "Total token throughput (tok/s):",
        format!("{:.2}", s.total_token_throughput),
    );
    line(
        &mut out,
        "Peak concurrent requests:",
        s.max_concurrency_observed,
    );
    stats(&mut out, "TTFT", "Time to First Token", &s.ttft);
    stats(
        &mut out,
        "TPOT",
        "Time per Output Token (excl. 1st token)",
        &s.tpot,
    );
    stats(&mut out, "ITL", "Inter-token Latency", &s.itl);
    stats(&mut out, "E2EL", "End-to-end Latency", &s.e2el);
    let _ = write!(out, "{:=^58}", "");
    out
}

/// One row of a sweep: its concurrency and result summary.
pub fn markdown_table(points: &[super::sweep::SweepPoint]) -> String {
    let mut out = String::from(
        "| label | concurrency | ok | failed | req/s | output tok/s | total tok/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | ITL p50 ms | E2EL p50 ms | E2EL p99 ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in points {
        let s = &p.summary;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            p.label,
            p.concurrency,
            s.completed,
            s.failed,
            s.request_throughput,
            s.output_throughput,
            s.total_token_throughput,
            s.ttft.p50_ms,
            s.ttft.p99_ms,
            s.tpot.p50_ms,
            s.tpot.p99_ms,
            s.itl.p50_ms,
            s.e2el.p50_ms,
            s.e2el.p99_ms,
        );
    }
    out
}
