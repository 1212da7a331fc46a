//! `bench sweep` over concurrencies against the stub server, and `bench plot` of two runs on
//! the same axes: per-point JSON, sweep.json, a Markdown table and SVG plots.

use indus::bench::serve::ServeBenchArgs;
use indus::bench::stub::{StubConfig, StubServer};
use indus::bench::sweep::{self, PlotArgs, SweepArgs, SweepPoint};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_writes_table_json_and_svg_plots() {
    let stub = StubServer::start(StubConfig {
        ttft: Duration::from_millis(20),
        itl: Duration::from_millis(4),
        ..Default::default()
    })
    .await
    .unwrap();
    let root = std::env::temp_dir().join(format!("indus-bench-sweep-{}", std::process::id()));
    let mut dirs = Vec::new();
    for label in ["indus", "other server"] {
        let mut serve = ServeBenchArgs::new(&stub.base_url(), "m");
        serve.dataset.input_len = 8;
        serve.dataset.output_len = 6;
        serve.label = Some(label.into());
        serve.request_timeout = 30.0;
        let dir = root.join(label.replace(' ', "_"));
        let args = SweepArgs {
            serve,
            concurrencies: vec![1, 2, 4],
            prompts_per_concurrency: Some(3),
            output_dir: dir.clone(),
        };
        let points = sweep::run(&args).await.unwrap();
        assert_eq!(points.len(), 3);
        for (p, c) in points.iter().zip([1, 2, 4]) {
            assert_eq!(p.concurrency, c);
            assert_eq!((p.summary.completed, p.summary.failed), (3 * c, 0));
            assert!(p.summary.max_concurrency_observed <= c);
            let point_json = dir.join(format!("{}-c{c}.json", label.replace(' ', "_")));
            let raw: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&point_json).unwrap()).unwrap();
            assert_eq!(raw["requests"].as_array().unwrap().len(), 3 * c);
        }
        let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
        assert_eq!(
            md.lines()
                .filter(|l| l.starts_with(&format!("| {label} |")))
                .count(),
            3
        );
        for svg in ["throughput_vs_latency.svg", "ttft_tpot.svg"] {
            let text = std::fs::read_to_string(dir.join(svg)).unwrap();
            assert!(
                text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
                "{svg}"
            );
            assert!(text.contains(label), "{svg} has a legend");
            assert!(text.contains("c=4"), "{svg} labels its points");
        }
        dirs.push(dir);
    }
    let out = root.join("both");
    let points = sweep::plot(&PlotArgs {
        inputs: dirs.clone(),
        output_dir: out.clone(),
    })
    .unwrap();
    assert_eq!(points.len(), 6);
    let svg = std::fs::read_to_string(out.join("ttft_tpot.svg")).unwrap();
    assert!(svg.contains("indus p50") && svg.contains("other server p99"));
    let back: Vec<SweepPoint> =
        serde_json::from_slice(&std::fs::read(dirs[0].join("sweep.json")).unwrap()).unwrap();
    assert_eq!(back.len(), 3);
    let _ = std::fs::remove_dir_all(root);
}
