//! The GPU check's suite run on the CPU: the "device" side is then the CPU op in the storage dtype, so every check
//! must pass -- which proves the suite's plumbing works end to end, that its tolerances accept a correct bf16/f16
//! computation in every case (hostile ones included), and that it records every op, before a GPU minute is spent.

use candle_core::Device;
use indus_kernels::check::metrics::EXPECTED_OPS;
use indus_kernels::check::suite::{self, Scale, SuiteOptions};
use indus_kernels::check::{Verdict, results_table};

fn run(scale: Scale) -> Vec<indus_kernels::check::CheckResult> {
    let mut seen = 0;
    let started = std::time::Instant::now();
    // Seconds spent per op (time since the previous result, by the result's name up to its first space).
    let mut last = started;
    let mut per_op: Vec<(String, f64)> = Vec::new();
    let results = suite::run(
        &Device::Cpu,
        &SuiteOptions {
            scale,
            seed: 0x1D05,
        },
        &mut |r| {
            seen += 1;
            let op = r.name.split(' ').next().unwrap_or("").to_string();
            let dt = last.elapsed().as_secs_f64();
            last = std::time::Instant::now();
            match per_op.iter_mut().find(|(o, _)| *o == op) {
                Some(e) => e.1 += dt,
                None => per_op.push((op, dt)),
            }
        },
    );
    for (op, secs) in &per_op {
        println!("  {op}: {secs:.1} s");
    }
    assert_eq!(
        seen,
        results.len(),
        "every result is reported as it is recorded"
    );
    println!(
        "{scale:?} suite on CPU: {} checks in {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    results
}

#[test]
fn tiny_suite_passes_on_cpu_and_checks_every_op() {
    let results = run(Scale::Tiny);
    let v = Verdict::of(&results);
    assert!(v.passed(), "{}\n{}", v.summary(), results_table(&results));
    for op in EXPECTED_OPS {
        if op == "poison control" {
            continue;
        }
        assert!(results.iter().any(|r| r.name.starts_with(op)), "{op}");
    }
    // The attention over-read control runs on every device (the fresh-allocation probe only on CUDA).
    assert!(
        results
            .iter()
            .any(|r| r.name == "poison control (attention over-read)")
    );
    // Row-wise errors are recorded for the numerical checks.
    assert!(
        results
            .iter()
            .filter(|r| r.name == "paged_attention")
            .all(|r| r.row_error.is_some())
    );
    // The bad-metadata checks reject on this device too.
    assert!(
        results
            .iter()
            .any(|r| r.name.contains("is an error") && r.passed())
    );
}

/// The full suite's CPU cost (on a GPU machine the CPU references are most of the check's run time):
/// `cargo test --release -p indus-kernels --test gpu_check_suite -- --ignored --nocapture`.
#[test]
#[ignore = "minutes in a debug build; run in release to time the full suite"]
fn full_suite_passes_on_cpu() {
    for scale in [Scale::Quick, Scale::Full] {
        let results = run(scale);
        let v = Verdict::of(&results);
        assert!(v.passed(), "{}\n{}", v.summary(), results_table(&results));
    }
}

#[test]
#[ignore = "prints the tiny suite's table"]
fn print_tiny_table() {
    println!("{}", results_table(&run(Scale::Tiny)));
}
