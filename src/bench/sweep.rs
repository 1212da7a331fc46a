//! `indus bench sweep`: `bench serve` over a list of concurrencies, then a Markdown table
//! and SVG plots (throughput against latency; TTFT and TPOT against concurrency).
//! `indus bench plot` draws several sweeps (say Indus and vLLM) on the same axes.

use super::metrics::Summary;
use super::report;
use super::serve::{self, ServeBenchArgs};
use anyhow::{Context, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub serve: ServeBenchArgs,
    /// Concurrencies to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    pub concurrencies: Vec<usize>,
    /// Requests per point = this × concurrency (else --num-prompts for every point).
    #[arg(long)]
    pub prompts_per_concurrency: Option<usize>,
    /// Where to write each point's JSON, sweep.json, results.md and the plots.
    #[arg(long, default_value = "bench-results")]
    pub output_dir: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PlotArgs {
    /// sweep.json files, or directories holding one; each keeps its label.
    #[arg(long = "input", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write results.md and the plots.
    #[arg(long, default_value = "bench-plots")]
    pub output_dir: PathBuf,
}

/// One point of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepPoint {
    pub label: String,
    pub concurrency: usize,
    pub num_prompts: usize,
    pub summary: Summary,
}

pub async fn run(args: &SweepArgs) -> anyhow::Result<Vec<SweepPoint>> {
    if args.concurrencies.is_empty() || args.concurrencies.contains(&0) {
        bail!("--concurrencies must be positive numbers");
    }
    let label = args
        .serve
        .label
        .clone()
        .unwrap_or_else(|| args.serve.model.clone());
    let file_label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    let mut points = Vec::new();
    for &c in &args.concurrencies {
        let mut a = args.serve.clone();
        a.max_concurrency = Some(c);
        a.label = Some(label.clone());
        if let Some(k) = args.prompts_per_concurrency {
            a.num_prompts = k * c;
        }
        a.output_json = Some(args.output_dir.join(format!("{file_label}-c{c}.json")));
        eprintln!("== concurrency {c}: {} requests", a.num_prompts);
        let r = serve::run_and_report(&a).await?;
        points.push(SweepPoint {
            label: label.clone(),
            concurrency: c,
            num_prompts: a.num_prompts,
            summary: r.summary,
        });
    }
    serve::write_json(&args.output_dir.join("sweep.json"), &points)?;
    write_outputs(&points, &args.output_dir)?;
    Ok(points)
}

/// Reads sweep.json files (or directories with one) and draws them together.
pub fn plot(args: &PlotArgs) -> anyhow::Result<Vec<SweepPoint>> {
    let mut points = Vec::new();
    for input in &args.inputs {
        let file = if input.is_dir() {
            input.join("sweep.json")
        } else {
            input.clone()
        };
        let raw =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let p: Vec<SweepPoint> = serde_json::from_slice(&raw)
            .with_context(|| format!("{} is not a sweep.json", file.display()))?;
        points.extend(p);
    }
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    write_outputs(&points, &args.output_dir)?;
    Ok(points)
}

/// results.md, throughput_vs_latency.svg and ttft_tpot.svg.
pub fn write_outputs(points: &[SweepPoint], dir: &Path) -> anyhow::Result<()> {
    let table = report::markdown_table(points);
    std::fs::write(dir.join("results.md"), &table)?;
    println!("{table}");
    plot_throughput_latency(points, &dir.join("throughput_vs_latency.svg"))?;
    plot_ttft_tpot(points, &dir.join("ttft_tpot.svg"))?;
    eprintln!(
        "wrote {}/{{results.md,throughput_vs_latency.svg,ttft_tpot.svg}}",
        dir.display()
    );
    Ok(())
}

struct Series {
    name: String,
    color: RGBColor,
    /// (x, y, annotation)
    points: Vec<(f64, f64, String)>,
}

fn labels(points: &[SweepPoint]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in points {
        if !out.contains(&p.label) {
            out.push(p.label.clone());
        }
    }
    out
}

fn color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

fn series_of(
    points: &[SweepPoint],
    suffix: &str,
    lighten: bool,
    xy: impl Fn(&SweepPoint) -> (f64, f64),
) -> Vec<Series> {
    labels(points)
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let mut pts: Vec<&SweepPoint> = points.iter().filter(|p| &p.label == label).collect();
            pts.sort_by_key(|p| p.concurrency);
            let c = color(i);
            Series {
                name: format!("{label}{suffix}"),
                color: if lighten {
                    RGBColor(
                        c.0 / 2 + 127, // halfway to white
                        c.1 / 2 + 127,
                        c.2 / 2 + 127,
                    )
                } else {
                    c
                },
                points: pts
                    .iter()
                    .map(|p| {
                        let (x, y) = xy(p);
                        (x, y, format!("c={}", p.concurrency))
                    })
                    .collect(),
            }
        })
        .collect()
}

fn padded(lo: f64, hi: f64, from_zero: bool) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = (hi - lo).abs().max(hi.abs() * 0.1).max(1e-9);
    let lo = if from_zero {
        0.0f64.min(lo)
    } else {
        lo - span * 0.08
    };
    (lo, hi + span * 0.12)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    x_fmt: &dyn Fn(&f64) -> String,
    x_from_zero: bool,
) -> anyhow::Result<()> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for (x, y, _) in all {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y1 = y1.max(*y);
    }
    let (x0, x1) = padded(x0, x1, x_from_zero);
    let (y0, y1) = padded(0.0, y1, true);
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("plot: {e:?}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&|y: &f64| {
            if y1 >= 20.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .draw()
        .map_err(e)?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
            )
            .map_err(e)?;
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|p| Text::new(p.2.clone(), (p.0, p.1), ("sans-serif", 11).into_font())),
            )
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Output throughput against median end-to-end latency, one line per label.
pub fn plot_throughput_latency(points: &[SweepPoint], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    let (left, right) = root.split_horizontally(600);
    let plain = |x: &f64| format!("{x:.0}");
    panel(
        &left,
        "Throughput vs latency",
        "median end-to-end latency (ms)",
        "output tokens/s",
        &series_of(points, "", false, |p| {
            (p.summary.e2el.p50_ms, p.summary.output_throughput)
        }),
        &plain,
        true,
    )?;
    panel(
        &right,
        "Throughput vs per-token latency",
        "median TPOT (ms)",
        "output tokens/s",
        &series_of(points, "", false, |p| {
            (p.summary.tpot.p50_ms, p.summary.output_throughput)
        }),
        &|x: &f64| format!("{x:.1}"),
        true,
    )?;
    root.present().map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    Ok(())
}

/// TTFT and TPOT (p50 and p99) against concurrency, on a log2 axis.
pub fn plot_ttft_tpot(points: &[SweepPoint], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    let (left, right) = root.split_horizontally(600);
    let log2 = |p: &SweepPoint| (p.concurrency.max(1) as f64).log2();
    let pow2 = |x: &f64| {
        let v = 2f64.powf(*x);
        if (v - v.round()).abs() < 0.05 {
            format!("{}", v.round())
        } else {
            String::new()
        }
    };
    let mut ttft = series_of(points, " p50", false, |p| (log2(p), p.summary.ttft.p50_ms));
    ttft.extend(series_of(points, " p99", true, |p| {
        (log2(p), p.summary.ttft.p99_ms)
    }));
    panel(
        &left,
        "Time to first token",
        "concurrency",
        "TTFT (ms)",
        &ttft,
        &pow2,
        false,
    )?;
    let mut tpot = series_of(points, " p50", false, |p| (log2(p), p.summary.tpot.p50_ms));
    tpot.extend(series_of(points, " p99", true, |p| {
        (log2(p), p.summary.tpot.p99_ms)
    }));
    panel(
        &right,
        "Time per output token",
        "concurrency",
        "TPOT (ms)",
        &tpot,
        &pow2,
        false,
    )?;
    root.present().map_err(|e| anyhow::anyhow!("plot: {e:?}"))?;
    Ok(())
}
