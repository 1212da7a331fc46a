//! Encoder models against transformers / sentence-transformers on tiny random fixtures
//! (tests/fixtures/encoders, made by scripts/make_encoder_fixtures.py): an XLM-RoBERTa
//! sentence embedder (the multilingual path: Urdu and English, Unigram tokenizer) and
//! XLM-R and BERT cross-encoders. Token ids must match exactly; outputs within 1e-4.

mod common;

use common::{cosine, floats};
use indus::embed::{EncoderTokenizer, Length};
use indus_models::encoder::{EncoderInput, PoolingModel};
use indus_models::{LoadOptions, ModelFiles, ModelSource};
use serde_json::Value;
use std::path::PathBuf;

fn dir(name: &str) -> PathBuf {
    indus::loader::repo_fixture("encoders").join(name)
}

fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(dir(name).join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden json")
}

fn load(name: &str) -> (PoolingModel, EncoderTokenizer) {
    let files = ModelFiles::resolve(&ModelSource::Local(dir(name)), true).expect("files");
    let model = PoolingModel::load(&files, &LoadOptions::default()).expect("load");
    let tok = EncoderTokenizer::from_file(
        files.tokenizer.as_ref().expect("tokenizer.json"),
        model.sentence().do_lower_case,
    )
    .expect("tokenizer");
    (model, tok)
}

fn ids_of(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

#[test]
fn xlmr_embedder_matches_sentence_transformers() {
    let (model, tok) = load("tiny-xlmr");
    let g = golden("tiny-xlmr");
    assert_eq!(
        model.max_input_tokens(),
        48,
        "max_seq_length from the checkpoint"
    );
    let texts: Vec<&str> = g["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let want_ids = ids_of(&g["token_ids"]);
    let inputs: Vec<EncoderInput> = texts
        .iter()
        .map(|t| tok.encode(t, Length::TruncateTo(48)).unwrap())
        .collect();
    for (i, (got, want)) in inputs.iter().zip(&want_ids).enumerate() {
        assert_eq!(&got.ids, want, "token ids of input {i}: {:?}", texts[i]);
    }
    // One batch of all (padding up to the longest) and one input at a time: same answers.
    let together = model.embed(&inputs).unwrap();
    let alone: Vec<Vec<f32>> = inputs
        .iter()
        .map(|i| model.embed(std::slice::from_ref(i)).unwrap().remove(0))
        .collect();
    let want: Vec<Vec<f32>> = g["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let mut worst = 0f32;
    for i in 0..inputs.len() {
        for got in [&together[i], &alone[i]] {
            let err = got
                .iter()
                .zip(&want[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            worst = worst.max(err);
            assert!(cosine(got, &want[i]) >= 0.9999, "input {i}");
        }
    }
    assert!(worst < 1e-4, "max abs error {worst}");
    let norm: f32 = together[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "normalized: {norm}");
    // Different inputs give clearly different embeddings (the fixture is not degenerate).
    assert!(cosine(&together[0], &together[1]) < 0.99);
}

#[test]
fn over_long_inputs_are_refused_unless_truncated() {
    let (_, tok) = load("tiny-xlmr");
    let long = "رومنگ چارجز ہوم نیٹ ورک سے باہر لاگو ہوتے ہیں۔ ".repeat(20);
    let e = tok.encode(&long, Length::AtMost(48)).unwrap_err();
    assert!(
        matches!(e, indus::embed::EncodeError::TooLong { max: 48, .. }),
        "{e}"
    );
    let cut = tok.encode(&long, Length::TruncateTo(10)).unwrap();
    assert_eq!(cut.ids.len(), 10);
    assert_eq!((cut.ids[0], cut.ids[9]), (0, 2), "<s> … </s> kept");
    assert!(tok.encode("", Length::AtMost(48)).is_err());
}

fn check_reranker(name: &str) {
    let (model, tok) = load(name);
    assert!(model.is_classifier());
    let g = golden(name);
    let max = g["max_length"].as_u64().unwrap() as usize;
    let want_ids = ids_of(&g["token_ids"]);
    let pairs = g["pairs"].as_array().unwrap();
    let inputs: Vec<EncoderInput> = pairs
        .iter()
        .map(|p| {
            let (q, d) = (p[0].as_str().unwrap(), p[1].as_str().unwrap());
            tok.encode_pair(q, d, Length::TruncateTo(max)).unwrap()
        })
        .collect();
    let mut truncated = 0;
    for (i, (got, want)) in inputs.iter().zip(&want_ids).enumerate() {
        assert_eq!(&got.ids, want, "{name}: token ids of pair {i}");
        truncated += usize::from(got.ids.len() == max);
    }
    assert!(
        truncated > 0,
        "some pairs exercise longest-first truncation"
    );
    let logits = model.classify(&inputs).unwrap();
    let want = floats(&g["logits"]);
    let scores = floats(&g["scores"]);
    for (i, l) in logits.iter().enumerate() {
        assert_eq!(l.len(), 1);
        assert!(
            (l[0] - want[i]).abs() < 1e-4,
            "{name} pair {i}: {} vs {}",
            l[0],
            want[i]
        );
        let sigmoid = 1.0 / (1.0 + (-l[0]).exp());
        assert!((sigmoid - scores[i]).abs() < 1e-4, "{name} pair {i} score");
    }
}

#[test]
fn xlmr_cross_encoder_matches_transformers() {
    check_reranker("tiny-xlmr-reranker");
}

#[test]
fn bert_cross_encoder_matches_transformers() {
    check_reranker("tiny-bert-reranker");
}

#[tokio::test(flavor = "current_thread")]
async fn requests_past_the_in_flight_limit_are_refused_not_queued() {
    use indus::embed::{PoolingError, PoolingHandle, PoolingInfo, PoolingOptions, PoolingTask};
    let (model, tok) = load("tiny-xlmr");
    let info = PoolingInfo {
        task: PoolingTask::Embed,
        dimensions: model.hidden_size(),
        max_input_tokens: model.max_input_tokens(),
        vocab_size: tok.vocab_size(),
        any_dimensions: false,
        matryoshka_dimensions: Vec::new(),
        normalized: true,
        weight_bytes: model.weight_bytes(),
        max_client_batch_size: 64,
    };
    let opts = PoolingOptions {
        max_batch_tokens: 512,
        max_concurrent_requests: 2,
        tokenizer_threads: 1,
        compute_threads: 1,
        nice: 0,
    };
    let input = tok.encode("roaming charges", Length::AtMost(48)).unwrap();
    let handle = PoolingHandle::spawn(model, tok, info, &opts).unwrap();
    // All 20 are submitted in the first poll of join_all, before any can finish.
    let results =
        futures::future::join_all((0..20).map(|_| handle.run(vec![input.clone(); 8]))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(PoolingError::Overloaded(_))))
        .count();
    assert_eq!((ok, refused), (2, 18));
    assert_eq!(handle.stats().in_flight, 0, "every slot released");
    // Identical inputs give identical rows, whatever batch they ran in.
    let rows = results.into_iter().flatten().flatten().collect::<Vec<_>>();
    assert!(rows.windows(2).all(|w| w[0] == w[1]));
    assert!(
        handle.run(vec![input]).await.is_ok(),
        "accepts again once idle"
    );
}
