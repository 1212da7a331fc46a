//! `bench serve` against the stub OpenAI server (src/bench/stub.rs) on loopback: measured
//! TTFT and TPOT match the injected delays within 10 %, the JSON holds every request with
//! monotonic timestamps, failures and API keys are handled, and the load generator itself
//! sustains thousands of tiny requests per second.

use indus::bench::metrics::RequestRecord;
use indus::bench::serve::{self, ServeBenchArgs, ServeResult};
use indus::bench::stub::{StubConfig, StubServer};
use std::time::Duration;

/// The tests run one at a time: the self-cost test saturates both cores, which would
/// disturb the timing tests beside it.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn args(stub: &StubServer) -> ServeBenchArgs {
    let mut a = ServeBenchArgs::new(&stub.base_url(), "stub-model");
    a.dataset.input_len = 16;
    a.dataset.output_len = 8;
    a.request_timeout = 30.0;
    a.max_duration = Some(60.0);
    a
}

fn within(measured_ms: f64, want_ms: f64, tol: f64) -> bool {
    (measured_ms - want_ms).abs() <= want_ms * tol
}

fn check_record_times(r: &RequestRecord) {
    let first = r.first_token_s.expect("a first token");
    assert!(r.start_s >= 0.0, "{r:?}");
    assert!(r.start_s <= first && first <= r.end_s, "{r:?}");
    assert!(r.itl_s.iter().all(|&x| x >= 0.0), "{r:?}");
    let ttft = r.ttft_s.unwrap();
    assert!((r.start_s + ttft - first).abs() < 1e-6);
    assert!((r.end_s - r.start_s - r.latency_s).abs() < 1e-6);
    // The chunks' times add up: first token + the gaps ≤ the end.
    assert!(
        first + r.itl_s.iter().sum::<f64>() <= r.end_s + 1e-6,
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_ttft_and_tpot_match_injected_delays() {
    let _serial = SERIAL.lock().await;
    let (ttft_ms, itl_ms) = (250.0, 25.0);
    let stub = StubServer::start(StubConfig {
        ttft: Duration::from_millis(250),
        itl: Duration::from_millis(25),
        ..Default::default()
    })
    .await
    .unwrap();
    for endpoint in ["/v1/completions", "/v1/chat/completions"] {
        let mut a = args(&stub);
        a.endpoint = endpoint.into();
        a.num_prompts = 12;
        a.dataset.output_len = 16;
        a.max_concurrency = Some(6);
        let r = serve::run(&a).await.unwrap();
        let s = &r.summary;
        assert_eq!((s.completed, s.failed), (12, 0), "{endpoint}");
        assert_eq!(s.total_output_tokens, 12 * 16);
        for rec in &r.requests {
            check_record_times(rec);
            assert_eq!(rec.output_tokens, 16);
            assert_eq!(rec.itl_s.len(), 15);
            let ttft = rec.ttft_s.unwrap() * 1e3;
            let tpot = rec.tpot_s().unwrap() * 1e3;
            assert!(within(ttft, ttft_ms, 0.10), "{endpoint}: TTFT {ttft} ms");
            assert!(within(tpot, itl_ms, 0.10), "{endpoint}: TPOT {tpot} ms");
        }
        for (name, st, want) in [
            ("TTFT", &s.ttft, ttft_ms),
            ("TPOT", &s.tpot, itl_ms),
            ("ITL", &s.itl, itl_ms),
        ] {
            assert!(within(st.mean_ms, want, 0.10), "{endpoint} {name} {st:?}");
            assert!(within(st.p50_ms, want, 0.10), "{endpoint} {name} {st:?}");
        }
        let e2e = ttft_ms + 15.0 * itl_ms;
        assert!(within(s.e2el.p50_ms, e2e, 0.10), "{:?}", s.e2el);
        // Six at a time: the first six start together, the next six after them.
        assert_eq!(s.max_concurrency_observed, 6);
        eprintln!(
            "{endpoint}: TTFT p50 {:.1} ms (injected {ttft_ms}), TPOT p50 {:.2} ms (injected {itl_ms}), ITL p50 {:.2} ms",
            s.ttft.p50_ms, s.tpot.p50_ms, s.itl.p50_ms
        );
    }
}

/// How a request's inter-token gaps are spread: their median, and the share that are near
/// zero (< 1 ms: two events that arrived together).
#[derive(Debug, Clone, Copy, PartialEq)]
struct GapProfile {
    median_ms: f64,
    near_zero_fraction: f64,
}

/// A gap below this counts as "arrived with the previous event".
const NEAR_ZERO_MS: f64 = 1.0;

fn gap_profile(gaps_s: &[f64]) -> GapProfile {
    let mut ms: Vec<f64> = gaps_s.iter().map(|g| g * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let median_ms = match ms.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    };
    let near_zero = ms.iter().filter(|&&g| g < NEAR_ZERO_MS).count();
    GapProfile {
        median_ms,
        near_zero_fraction: near_zero as f64 / ms.len().max(1) as f64,
    }
}

/// Events paced `itl_ms` apart, not bunched: the median gap is within 20 % of `itl_ms` and at
/// most a quarter of the gaps are near zero. A late wake-up on a loaded machine (one long gap,
/// then the held-back event right behind the next) makes one near-zero gap per late event and
/// leaves the median alone; bunching (Nagle, buffered writes, events flushed together) makes
/// most gaps near zero and moves the median to zero.
fn check_not_bunched(p: GapProfile, itl_ms: f64) -> Result<(), String> {
    if !within(p.median_ms, itl_ms, 0.20) {
        return Err(format!("median gap is not {itl_ms} ms ± 20 %: {p:?}"));
    }
    if p.near_zero_fraction > 0.25 {
        return Err(format!(
            "more than 25 % of the gaps are < {NEAR_ZERO_MS} ms (bunched events): {p:?}"
        ));
    }
    Ok(())
}

#[test]
fn gap_profile_tells_bunching_from_a_late_wakeup() {
    let itl = 0.005;
    // Paced: every gap 5 ms.
    let paced = vec![itl; 20];
    assert_eq!(
        gap_profile(&paced),
        GapProfile {
            median_ms: 5.0,
            near_zero_fraction: 0.0
        }
    );
    assert!(check_not_bunched(gap_profile(&paced), 5.0).is_ok());
    // The CI failure: one event woke late, the next followed right behind it.
    let mut late = paced.clone();
    late[0] = 0.000107;
    late[1] = 0.0099;
    let p = gap_profile(&late);
    assert!(check_not_bunched(p, 5.0).is_ok(), "{p:?}");
    // A loaded machine: a few such late wake-ups in one request still pass.
    let mut loaded = paced.clone();
    for i in [3, 9, 15] {
        loaded[i] = 0.0098;
        loaded[i + 1] = 0.0002;
    }
    assert!(check_not_bunched(gap_profile(&loaded), 5.0).is_ok());
    // Bunches of 4: one gap of 4 × 5 ms, then three near zero — fails.
    let bunched: Vec<f64> = (0..20)
        .map(|i| if i % 4 == 0 { 4.0 * itl } else { 0.00001 })
        .collect();
    let p = gap_profile(&bunched);
    assert_eq!(p.near_zero_fraction, 0.75);
    assert!(check_not_bunched(p, 5.0).is_err(), "{p:?}");
    // Pairs: half the gaps near zero; the median (5 ms) looks right, the fraction fails it.
    let pairs: Vec<f64> = (0..20)
        .map(|i| if i % 2 == 0 { 2.0 * itl } else { 0.00001 })
        .collect();
    assert!(check_not_bunched(gap_profile(&pairs), 5.0).is_err());
    // Uniformly slow pacing is caught by the median.
    assert!(check_not_bunched(gap_profile(&[0.008; 20]), 5.0).is_err());
}

/// Short delays, below Linux's 40 ms delayed ACK: a server without TCP_NODELAY would hold the
/// first chunk back (Nagle) and inflate TTFT, and a server that buffers its writes would
/// deliver the events in bunches. The bounds hold on a loaded 2-core machine, where single
/// events wake up late: TTFT p50 within 20 %, TPOT p50 within 10 %, every request's TPOT
/// within 30 %, and the gaps of all requests paced (median within 20 % of 10 ms, at most a
/// quarter near zero) — see `gap_profile_tells_bunching_from_a_late_wakeup`. 10 ms, not 5:
/// one 50 ms stall of the test process under `stress-ng --cpu 2` bunches the events of all
/// four streams behind it, a quarter of the gaps at 5 ms (seen once in 8 runs), half as many
/// at 10 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_delays_are_measured_too() {
    let _serial = SERIAL.lock().await;
    let (ttft_ms, itl_ms) = (50.0, 10.0);
    let stub = StubServer::start(StubConfig {
        ttft: Duration::from_millis(50),
        itl: Duration::from_millis(10),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut a = args(&stub);
    a.num_prompts = 8;
    a.dataset.output_len = 21;
    a.max_concurrency = Some(4);
    let r = serve::run(&a).await.unwrap();
    let s = &r.summary;
    assert_eq!((s.completed, s.failed), (8, 0));
    assert!(within(s.ttft.p50_ms, ttft_ms, 0.20), "{:?}", s.ttft);
    assert!(within(s.tpot.p50_ms, itl_ms, 0.10), "{:?}", s.tpot);
    let mut all_gaps = Vec::new();
    for rec in &r.requests {
        assert_eq!(rec.itl_s.len(), 20, "{rec:?}");
        let tpot = rec.tpot_s().unwrap() * 1e3;
        assert!(
            within(tpot, itl_ms, 0.30),
            "TPOT {tpot} ms: {:?}",
            rec.itl_s
        );
        all_gaps.extend_from_slice(&rec.itl_s);
    }
    let p = gap_profile(&all_gaps);
    eprintln!(
        "short delays: TTFT p50 {:.2} ms, TPOT p50 {:.3} ms, {p:?}",
        s.ttft.p50_ms, s.tpot.p50_ms
    );
    if let Err(e) = check_not_bunched(p, itl_ms) {
        let per_request: Vec<GapProfile> =
            r.requests.iter().map(|x| gap_profile(&x.itl_s)).collect();
        panic!("{e}; per request: {per_request:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_tokens_counted_from_chunks_without_usage() {
    let _serial = SERIAL.lock().await;
    let stub = StubServer::start(StubConfig {
        itl: Duration::from_millis(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut a = args(&stub);
    a.num_prompts = 5;
    a.dataset.output_len = 7;
    a.extra_body = Some(r#"{"stream_options": {"include_usage": false}}"#.into());
    let r = serve::run(&a).await.unwrap();
    assert_eq!(r.summary.completed, 5);
    assert!(r.requests.iter().all(|x| x.output_tokens == 7));
    assert!(r.requests.iter().all(|x| x.prompt_tokens.is_none()));
    // Without usage the dataset's prompt length counts.
    assert_eq!(r.summary.total_input_tokens, 5 * 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_has_every_request_with_poisson_arrivals_and_warmup() {
    let _serial = SERIAL.lock().await;
    let stub = StubServer::start(StubConfig {
        ttft: Duration::from_millis(3),
        itl: Duration::from_millis(1),
        api_key: Some("sekret".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("indus-bench-json-{}", std::process::id()));
    let path = dir.join("out.json");
    let mut a = args(&stub);
    a.api_key = Some("sekret".into());
    a.num_prompts = 120;
    a.request_rate = 200.0;
    a.max_concurrency = Some(32);
    a.warmup = 5;
    a.seed = 42;
    a.slo_ttft_ms = Some(10_000.0);
    a.percentiles = vec![25.0, 99.9];
    a.output_json = Some(path.clone());
    a.label = Some("stub".into());
    let printed = serve::run_and_report(&a).await.unwrap();
    assert_eq!(stub.requests(), 125);

    let back: ServeResult = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(raw["requests"].as_array().unwrap().len(), 120);
    assert_eq!(raw["summary"]["completed"], 120);
    assert_eq!(raw["summary"]["failed"], 0);
    assert_eq!(raw["info"]["request_rate"], 200.0);
    let s = &back.summary;
    assert_eq!(s.completed, printed.summary.completed);
    assert_eq!(s.total_output_tokens, 120 * 8);
    assert_eq!(s.total_input_tokens, 120 * 16, "usage prompt_tokens");
    assert!((s.goodput.unwrap() - s.request_throughput).abs() < 1e-9);
    assert_eq!(s.ttft.extra.len(), 2);
    let mut idx: Vec<usize> = back.requests.iter().map(|r| r.index).collect();
    idx.sort();
    assert_eq!(idx, (0..120).collect::<Vec<_>>());
    for r in &back.requests {
        assert!(r.success && r.error.is_none());
        assert_eq!(r.prompt_tokens, Some(16));
        check_record_times(r);
    }
    // Requests go out in arrival order, spread over about 120 / 200 = 0.6 s.
    let starts: Vec<f64> = back.requests.iter().map(|r| r.start_s).collect();
    assert!(starts.windows(2).all(|w| w[1] + 0.05 >= w[0]), "{starts:?}");
    let span = starts[starts.len() - 1] - starts[0];
    assert!((0.3..1.5).contains(&span), "span {span}");
    assert!(s.duration_s >= span);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_and_reported() {
    let _serial = SERIAL.lock().await;
    let stub = StubServer::start(StubConfig {
        fail_every: Some(4),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut a = args(&stub);
    a.num_prompts = 40;
    a.max_concurrency = Some(1);
    let r = serve::run(&a).await.unwrap();
    assert_eq!((r.summary.completed, r.summary.failed), (30, 10));
    let bad: Vec<_> = r.requests.iter().filter(|x| !x.success).collect();
    assert!(
        bad[0].error.as_deref().unwrap().contains("HTTP 500"),
        "{bad:?}"
    );
    assert!(
        bad[0]
            .error
            .as_deref()
            .unwrap()
            .contains("injected failure")
    );

    // A wrong key: every request fails with 401; warm-up failing stops the run early.
    let keyed = StubServer::start(StubConfig {
        api_key: Some("right".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut a = args(&keyed);
    a.api_key = Some("wrong".into());
    a.warmup = 1;
    let err = serve::run(&a).await.unwrap_err().to_string();
    assert!(err.contains("warm-up") && err.contains("401"), "{err}");

    // Nothing listening: failed requests, not a hang.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut a = ServeBenchArgs::new(&format!("http://127.0.0.1:{port}"), "m");
    a.num_prompts = 3;
    a.dataset.input_len = 4;
    a.request_timeout = 5.0;
    let r = serve::run(&a).await.unwrap();
    assert_eq!(r.summary.failed, 3);
}

/// CPU time (user + system) this process has used so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The load generator's own cost: tiny streamed responses from the stub on loopback, the stub
/// and the client sharing this process's two worker threads. What is asserted is CPU time per
/// request (client + stub, from getrusage), which other work on the machine does not inflate:
/// at most 400 µs (INDUS_BENCH_MAX_CPU_US overrides), plus a loose wall-clock floor of 500
/// req/s that only a hang or a pathological slowdown misses. Both figures are printed; the
/// ≥ 5000 req/s run with the release binary is in docs/benchmarks.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_sustains_thousands_of_requests_per_second() {
    let _serial = SERIAL.lock().await;
    let stub = StubServer::start(StubConfig::default()).await.unwrap();
    let mut a = args(&stub);
    a.dataset.input_len = 4;
    a.dataset.output_len = 2;
    a.num_prompts = 20_000;
    a.max_concurrency = Some(64);
    a.warmup = 64;
    a.max_duration = Some(60.0);
    let cpu_before = process_cpu();
    let r = serve::run(&a).await.unwrap();
    let cpu = process_cpu() - cpu_before;
    let s = &r.summary;
    assert_eq!(s.failed, 0);
    assert_eq!(s.completed, 20_000, "{s:?}");
    let sent = stub.requests();
    let cpu_us = cpu.as_secs_f64() * 1e6 / sent as f64;
    let max_cpu_us: f64 = std::env::var("INDUS_BENCH_MAX_CPU_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400.0);
    eprintln!(
        "self-cost: {} requests in {:.2} s = {:.0} req/s, {cpu_us:.1} µs CPU per request \
         (client + stub, {sent} requests with warm-up; TTFT p50 {:.3} ms)",
        s.completed, s.duration_s, s.request_throughput, s.ttft.p50_ms
    );
    assert!(
        cpu_us <= max_cpu_us,
        "{cpu_us:.1} µs CPU per request > {max_cpu_us}"
    );
    assert!(
        s.request_throughput >= 500.0,
        "{:.0} req/s < 500",
        s.request_throughput
    );
}
