//! How the GPU check compares a kernel's output with its CPU reference, and how it decides that a run passed.
//!
//! Errors are measured twice: over the whole output (relative L2) and for the worst row (relative L2 of each row
//! of `row_len` elements: one head of one token for attention and rotary, one token for norms and SiLU). One
//! number per batch hides a single wrong row: a decode row of a mixed batch that misses its newest key moves the
//! batch's error by about 1e-3, well under the 1e-2 tolerance, while that row alone is off by several per cent.

use candle_core::DType;

/// SplitMix64: small, seedable, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Roughly normal (sum of four uniforms, variance 1, bounded by +-3.46): ten times cheaper than
    /// [`Rng::normal`], for the billions of logits of the sampling check.
    pub fn approx_normal(&mut self) -> f32 {
        let u = self.next_u64();
        let s: u32 = (0..4).map(|i| ((u >> (16 * i)) & 0xffff) as u32).sum();
        (s as f32 / 65536.0 - 2.0) * 1.732_050_8
    }

    pub fn normals(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            xs.swap(i, self.below(i + 1));
        }
    }
}

/// Relative L2 error `|got - want| / |want|` (absolute when `want` is all zeros). Any non-finite `got` where
/// `want` is finite gives infinity, so poisoned values that leak into an output fail every tolerance.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_l2: lengths differ");
    let (mut num, mut den) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        if w.is_finite() && !g.is_finite() {
            return f64::INFINITY;
        }
        let d = g as f64 - w as f64;
        num += d * d;
        den += w as f64 * w as f64;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

pub fn max_abs_diff(got: &[f32], want: &[f32]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w as f64).abs())
        .fold(
            0.0,
            |a: f64, d| if d.is_nan() { f64::INFINITY } else { a.max(d) },
        )
}

/// Bitwise-style equality that treats NaN == NaN (cache writes are copies: they must match exactly, and the
/// poisoned slots they must not touch stay NaN).
pub fn mismatches_exact(got: &[f32], want: &[f32]) -> usize {
    got.iter()
        .zip(want)
        .filter(|(g, w)| !(g == w || (g.is_nan() && w.is_nan())))
        .count()
}

/// Elements where exactly one of `got` and `want` is NaN: how the poison controls compare where NaN landed.
pub fn nan_mask_mismatches(got: &[f32], want: &[f32]) -> usize {
    got.iter()
        .zip(want)
        .filter(|(g, w)| g.is_nan() != w.is_nan())
        .count()
}

/// Tolerances on the relative L2 error of a kernel against its CPU reference: over the whole output, and for the
/// worst row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    pub batch: f64,
    pub row: f64,
}

/// bf16/f16: 1e-2 over the output and 1.5e-2 per row (a correct kernel -- f32 accumulation, bf16 probabilities
/// in the tensor-core prefill, the output rounded once -- stays around 3.5e-3 per row; a row missing a key, a
/// softmax that overflows or a norm without its eps scores 3e-2 to infinity). f32: 1e-4 and 2e-4.
pub fn tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance {
            batch: 1e-4,
            row: 2e-4,
        },
        _ => Tolerance {
            batch: 1e-2,
            row: 1.5e-2,
        },
    }
}

/// A kernel's output against its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Relative L2 error of the whole output.
    pub rel_l2: f64,
    /// The largest relative L2 error of one row, and which row.
    pub worst_row_rel_l2: f64,
    pub worst_row: usize,
    pub rows: usize,
    pub max_abs: f64,
}

impl Comparison {
    pub fn within(&self, tol: Tolerance) -> bool {
        self.rel_l2 <= tol.batch && self.worst_row_rel_l2 <= tol.row
    }
}

/// Compares `got` with `want` as a whole and row by row (`row_len` elements per row; the last row may be short).
pub fn compare(got: &[f32], want: &[f32], row_len: usize) -> Comparison {
    assert_eq!(got.len(), want.len(), "compare: lengths differ");
    let row_len = row_len.max(1);
    let mut worst = (0f64, 0usize);
    let mut rows = 0;
    for (i, (g, w)) in got.chunks(row_len).zip(want.chunks(row_len)).enumerate() {
        rows += 1;
        let e = rel_l2(g, w);
        // NaN never compares greater: count it as the worst there is.
        let e = if e.is_nan() { f64::INFINITY } else { e };
        if e > worst.0 || i == 0 {
            worst = (e, i);
        }
    }
    let total = rel_l2(got, want);
    Comparison {
        rel_l2: if total.is_nan() { f64::INFINITY } else { total },
        worst_row_rel_l2: worst.0,
        worst_row: worst.1,
        rows,
        max_abs: max_abs_diff(got, want),
    }
}

/// One line of the check's report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub dtype: DType,
    pub detail: String,
    /// Relative L2 error of the whole output (or a count of mismatches for exact checks).
    pub error: f64,
    pub tolerance: f64,
    /// The worst row's relative L2 error, for checks compared row by row.
    pub row_error: Option<f64>,
    pub row_tolerance: f64,
}

impl CheckResult {
    /// A numerical comparison, row by row and as a whole.
    pub fn compared(
        name: &str,
        dtype: DType,
        detail: String,
        c: &Comparison,
        tol: Tolerance,
    ) -> Self {
        Self {
            name: name.into(),
            dtype,
            detail: format!(
                "{detail} (worst row {} of {}, max abs {:.1e})",
                c.worst_row, c.rows, c.max_abs
            ),
            error: c.rel_l2,
            tolerance: tol.batch,
            row_error: Some(c.worst_row_rel_l2),
            row_tolerance: tol.row,
        }
    }

    /// An exact check: `mismatches` must be 0.
    pub fn exact(name: &str, dtype: DType, detail: String, mismatches: usize) -> Self {
        Self {
            name: name.into(),
            dtype,
            detail,
            error: mismatches as f64,
            tolerance: 0.0,
            row_error: None,
            row_tolerance: 0.0,
        }
    }

    /// A check that could not run (a launch failure, an unsupported shape): a failure.
    pub fn errored(name: &str, dtype: DType, error: &str) -> Self {
        Self {
            name: name.into(),
            dtype,
            // The message only: candle appends a backtrace when RUST_BACKTRACE is set.
            detail: format!("error: {}", error.lines().next().unwrap_or("")).replace('|', "/"),
            error: f64::INFINITY,
            tolerance: 0.0,
            row_error: None,
            row_tolerance: 0.0,
        }
    }

    /// Within both tolerances (a NaN error never passes).
    pub fn passed(&self) -> bool {
        self.error <= self.tolerance && self.row_error.is_none_or(|e| e <= self.row_tolerance)
    }
}

/// The ops every full run must have checked: a run that silently skipped one (or recorded nothing) is not a pass.
pub const EXPECTED_OPS: [&str; 12] = [
    "write_kv_cache",
    "rms_norm",
    "fused_add_rms_norm",
    "rotary",
    "silu_mul",
    "fused_moe",
    "int4_matmul",
    "paged_attention",
    "poison control",
    "fma_exp",
    "sample",
    "argmax",
];

/// Whether a run passed: it recorded results, none failed, and every op of [`EXPECTED_OPS`] has at least one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub checks: usize,
    pub failed: usize,
    /// Ops of [`EXPECTED_OPS`] without a single result.
    pub missing: Vec<&'static str>,
}

impl Verdict {
    pub fn of(results: &[CheckResult]) -> Self {
        let missing = EXPECTED_OPS
            .iter()
            .copied()
            .filter(|op| !results.iter().any(|r| r.name.starts_with(op)))
            .collect();
        Self {
            checks: results.len(),
            failed: results.iter().filter(|r| !r.passed()).count(),
            missing,
        }
    }

    pub fn passed(&self) -> bool {
        self.checks > 0 && self.failed == 0 && self.missing.is_empty()
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} checks, {} passed, {} failed",
            self.checks,
            self.checks - self.failed,
            self.failed
        );
        if self.checks == 0 {
            s.push_str("; no results at all: FAIL");
        }
        if !self.missing.is_empty() {
            s.push_str(&format!("; never checked: {}", self.missing.join(", ")));
        }
        s
    }
}

/// Markdown table of results, failures first.
pub fn results_table(results: &[CheckResult]) -> String {
    let mut rows: Vec<&CheckResult> = results.iter().collect();
    rows.sort_by_key(|r| r.passed());
    let mut s = String::from(
        "| check | dtype | case | error | worst row | tolerance (all / row) | result |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (row, tol) = match r.row_error {
            Some(e) => (
                format!("{e:.2e}"),
                format!("{:.0e} / {:.1e}", r.tolerance, r.row_tolerance),
            ),
            None => ("".into(), format!("{:.0e}", r.tolerance)),
        };
        s.push_str(&format!(
            "| {} | {:?} | {} | {:.2e} | {row} | {tol} | {} |\n",
            r.name,
            r.dtype,
            r.detail,
            r.error,
            if r.passed() { "ok" } else { "FAIL" }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_normal() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut r = Rng::new(1);
        for normal in [true, false] {
            let xs: Vec<f32> = (0..20_000)
                .map(|_| {
                    if normal {
                        r.normal()
                    } else {
                        r.approx_normal()
                    }
                })
                .collect();
            let mean = xs.iter().sum::<f32>() / xs.len() as f32;
            let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / xs.len() as f32;
            assert!(
                mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
                "{mean} {var}"
            );
        }
        assert!((0..1000).all(|_| (0.0..1.0).contains(&r.uniform())));
    }

    #[test]
    fn metrics_catch_poison() {
        assert_eq!(rel_l2(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((rel_l2(&[1.1, 2.0], &[1.0, 2.0]) - 0.1 / 5f64.sqrt()).abs() < 1e-7);
        assert_eq!(rel_l2(&[f32::NAN, 2.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(max_abs_diff(&[f32::NAN], &[1.0]), f64::INFINITY);
        assert_eq!(
            mismatches_exact(&[f32::NAN, 1.0, 2.0], &[f32::NAN, 1.0, 3.0]),
            1
        );
        assert_eq!(nan_mask_mismatches(&[f32::NAN, 1.0], &[f32::NAN, 2.0]), 0);
        assert_eq!(nan_mask_mismatches(&[1.0, 1.0], &[f32::NAN, 2.0]), 1);
        assert_eq!(tolerance(DType::BF16).batch, 1e-2);
        assert_eq!(tolerance(DType::F16).row, 1.5e-2);
        assert_eq!(tolerance(DType::F32).batch, 1e-4);
    }

    #[test]
    fn one_bad_row_fails_though_the_batch_passes() {
        // 100 rows of 8; row 37 is off by 5 %: 0.5 % over the batch, 5 % for the row.
        let want: Vec<f32> = (0..800).map(|i| 1.0 + (i % 7) as f32).collect();
        let mut got = want.clone();
        for v in &mut got[37 * 8..38 * 8] {
            *v *= 1.05;
        }
        let c = compare(&got, &want, 8);
        assert!(c.rel_l2 < 1e-2, "{c:?}");
        assert!((c.worst_row_rel_l2 - 0.05).abs() < 1e-6, "{c:?}");
        assert_eq!((c.worst_row, c.rows), (37, 100));
        assert!(!c.within(tolerance(DType::BF16)));
        let r = CheckResult::compared("x", DType::BF16, "d".into(), &c, tolerance(DType::BF16));
        assert!(!r.passed());
        // A NaN in one row is the worst row, whatever the others do.
        got[5] = f32::NAN;
        let c = compare(&got, &want, 8);
        assert_eq!((c.worst_row, c.worst_row_rel_l2), (0, f64::INFINITY));
        assert_eq!(c.rel_l2, f64::INFINITY);
    }

    #[test]
    fn a_run_with_no_results_or_a_missing_op_fails() {
        assert!(!Verdict::of(&[]).passed());
        assert!(Verdict::of(&[]).summary().contains("no results"));
        let ok = |name: &str| CheckResult::exact(name, DType::F32, String::new(), 0);
        let all: Vec<CheckResult> = EXPECTED_OPS.iter().map(|n| ok(n)).collect();
        assert!(Verdict::of(&all).passed());
        let v = Verdict::of(&all[1..]);
        assert!(!v.passed());
        assert_eq!(v.missing, vec!["write_kv_cache"]);
        let mut bad = all.clone();
        bad.push(CheckResult::errored("sample", DType::F32, "launch failed"));
        assert_eq!(Verdict::of(&bad).failed, 1);
        assert!(!Verdict::of(&bad).passed());
    }

    #[test]
    fn table_lists_failures_first() {
        let r = |e| CheckResult::exact("x", DType::F32, "d".into(), e);
        let t = results_table(&[r(0), r(1)]);
        let fail = t.find("FAIL").unwrap();
        let ok = t.find("| ok |").unwrap();
        assert!(fail < ok);
    }
}
