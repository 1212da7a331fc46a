//! The real sentence-transformers/all-MiniLM-L6-v2 against sentence-transformers' own
//! embeddings of 200 sentences (English, Urdu, past the 256-token limit, one word;
//! tests/fixtures/encoders/minilm-golden.json from scripts/make_encoder_fixtures.py):
//! cosine ≥ 0.9999 for each, in the model directly and through `indus serve` with the
//! sentences sent in mixed client batches of 1–64 at once.
//!
//! `.ci/run` downloads the model (scripts/fetch-test-models.sh) and exports
//! INDUS_TEST_MINILM_DIR. Unset → each test says so and passes; set but missing → fail.

mod common;
mod common_server;

use common::{cosine, floats};

use common_server::{TestServer, post_json};
use indus::embed::{EncoderTokenizer, Length};
use indus_models::encoder::{EncoderInput, PoolingModel};
use indus_models::{LoadOptions, ModelFiles, ModelSource};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::path::PathBuf;

const VAR: &str = "INDUS_TEST_MINILM_DIR";
const SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

fn model_dir() -> Option<PathBuf> {
    let Some(p) = std::env::var_os(VAR) else {
        println!("{VAR} is not set: skipping (scripts/fetch-test-models.sh installs the model)");
        return None;
    };
    let p = PathBuf::from(p);
    let weights = p.join("model.safetensors");
    let bytes =
        std::fs::read(&weights).unwrap_or_else(|e| panic!("{VAR}: {}: {e}", weights.display()));
    use sha2::Digest;
    let got = format!("{:x}", sha2::Sha256::digest(&bytes));
    assert_eq!(got, SHA256, "{VAR}={} is not the pinned model", p.display());
    Some(p)
}

struct Golden {
    inputs: Vec<String>,
    token_counts: Vec<usize>,
    embeddings: Vec<Vec<f32>>,
}

fn golden() -> Golden {
    let path = indus::loader::repo_fixture("encoders").join("minilm-golden.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let arr = |k: &str| v[k].as_array().unwrap().clone();
    Golden {
        inputs: arr("inputs")
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        token_counts: arr("token_counts")
            .iter()
            .map(|n| n.as_u64().unwrap() as usize)
            .collect(),
        embeddings: arr("embeddings").iter().map(floats).collect(),
    }
}

#[test]
fn minilm_matches_sentence_transformers_in_any_batch() {
    let Some(dir) = model_dir() else { return };
    let g = golden();
    assert_eq!(g.inputs.len(), 200);
    let files = ModelFiles::resolve(&ModelSource::Local(dir), true).unwrap();
    let model = PoolingModel::load(&files, &LoadOptions::default()).unwrap();
    assert_eq!((model.max_input_tokens(), model.hidden_size()), (256, 384));
    let tok = EncoderTokenizer::from_file(files.tokenizer.as_ref().unwrap(), false).unwrap();
    let inputs: Vec<EncoderInput> = g
        .inputs
        .iter()
        .map(|t| tok.encode(t, Length::TruncateTo(256)).unwrap())
        .collect();
    let counts: Vec<usize> = inputs.iter().map(|i| i.ids.len()).collect();
    assert_eq!(
        counts, g.token_counts,
        "token counts as sentence-transformers'"
    );
    assert!(
        counts.iter().filter(|&&n| n == 256).count() >= 20,
        "long inputs are truncated"
    );
    // Random batch sizes 1..=64 over a shuffled order: padding and batch composition
    // must not move any embedding.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut worst = 1f32;
    let mut at = 0;
    while at < order.len() {
        let n = rng.random_range(1..=64).min(order.len() - at);
        let batch: Vec<EncoderInput> = order[at..at + n]
            .iter()
            .map(|&i| inputs[i].clone())
            .collect();
        let out = model.embed(&batch).unwrap();
        for (&i, e) in order[at..at + n].iter().zip(&out) {
            let c = cosine(e, &g.embeddings[i]);
            worst = worst.min(c);
            assert!(c >= 0.9999, "sentence {i} ({:?}): cosine {c}", g.inputs[i]);
        }
        at += n;
    }
    println!(
        "all-MiniLM-L6-v2 vs sentence-transformers: worst cosine {worst:.7} over 200 sentences"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minilm_through_the_server_in_concurrent_mixed_batches() {
    let Some(dir) = model_dir() else { return };
    let g = golden();
    let server = TestServer::start_model(&dir, &["--served-model-name", "minilm"], &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut at = 0;
    while at < g.inputs.len() {
        let n = rng.random_range(1..=64).min(g.inputs.len() - at);
        batches.push((at..at + n).collect());
        at += n;
    }
    let url = server.url("/v1/embeddings");
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|idx| {
            let input: Vec<&str> = idx.iter().map(|&i| g.inputs[i].as_str()).collect();
            let body = json!({"model": "minilm", "input": input, "truncate_prompt_tokens": -1});
            let url = url.clone();
            tokio::spawn(async move { (idx, post_json(&url, &body, None).await) })
        })
        .collect();
    let mut seen = 0;
    for t in tasks {
        let (idx, (status, _, body)) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data.len(), idx.len());
        let tokens: usize = idx.iter().map(|&i| g.token_counts[i]).sum();
        assert_eq!(
            body["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
            tokens
        );
        for (d, &i) in data.iter().zip(&idx) {
            let c = cosine(&floats(&d["embedding"]), &g.embeddings[i]);
            assert!(c >= 0.9999, "sentence {i}: cosine {c}");
            seen += 1;
        }
    }
    assert_eq!(seen, 200);
    // Without truncate_prompt_tokens a long input is refused with a 400 naming the limit.
    let long = g.inputs[g.token_counts.iter().position(|&n| n == 256).unwrap()].clone();
    let (status, _, body) =
        post_json(&url, &json!({"model": "minilm", "input": [long]}), None).await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("256"), "{msg}");
    assert_eq!(body["error"]["param"], "input[0]");
}
