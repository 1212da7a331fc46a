//! What a Gateway API Inference Extension endpoint picker reads from each replica: the queue,
//! the running batch, KV-cache use as a 0..1 fraction and the cache layout, under the names
//! helm/profiles/inferencepool/epp-values.yaml gives it — so a renamed metric breaks this
//! test, not a cluster's routing.

mod common_server;

use common_server::{TestServer, metric_value};
use std::collections::BTreeSet;

/// The `indus_*` names the EPP values tell the endpoint picker to read.
fn names_in_epp_values() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/helm/profiles/inferencepool/epp-values.yaml"
    );
    let text = std::fs::read_to_string(path).expect("epp-values.yaml");
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.len() > "indus_".len() && w.starts_with("indus_"))
        .map(str::to_string)
        .collect()
}

/// The value of the one sample of `name`, whatever its labels.
fn sample(text: &str, name: &str) -> Option<(String, f64)> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let bare = series.split('{').next()?;
        (bare == name).then(|| Some((series.to_string(), value.parse().ok()?)))?
    })
}

#[tokio::test]
async fn the_endpoint_picker_finds_every_metric_it_is_told_to_read() {
    let s = TestServer::start(&["--block-size", "16", "--num-kv-blocks", "96"]);
    let text = s.metrics().await;

    let names = names_in_epp_values();
    assert!(names.len() >= 4, "{names:?}");
    for name in &names {
        let (_, value) =
            sample(&text, name).unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"));
        assert!(value.is_finite() && value >= 0.0, "{name} = {value}");
        assert!(
            text.contains(&format!("# TYPE {name} gauge")),
            "{name} must be a gauge"
        );
    }
    let usage = metric_value(&text, "indus_kv_cache_usage_perc").unwrap();
    assert!(
        (0.0..=1.0).contains(&usage),
        "a fraction, not a percentage: {usage}"
    );
    let (series, one) = sample(&text, "indus_cache_config_info").unwrap();
    assert_eq!(one, 1.0);
    assert!(series.contains(r#"block_size="16""#), "{series}");
    assert!(series.contains(r#"num_gpu_blocks="96""#), "{series}");
}
