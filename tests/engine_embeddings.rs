//! Decoder embedding models through the paged engine: an embedding request is a
//! prefill-only sequence whose output is the last token's final hidden state. Checked
//! against transformers' base models (tests/fixtures/encoders/decoder-embed-golden.json,
//! scripts/make_encoder_fixtures.py) for Llama and Qwen3 fixtures — alone, in chunked
//! prefill, and batched in the same steps as generation, which must not change either.

mod common;

use common::{assert_all_blocks_free, engine, greedy, run_alone};
use indus::engine::{EngineConfig, Request};
use indus::scheduler::SchedulerConfig;
use serde_json::Value;

struct Golden {
    token_ids: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn golden(name: &str) -> Golden {
    let path = indus::loader::repo_fixture("encoders").join("decoder-embed-golden.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<f64>> {
        v[name][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    Golden {
        token_ids: rows("token_ids")
            .into_iter()
            .map(|r| r.into_iter().map(|x| x as u32).collect())
            .collect(),
        embeddings: rows("embeddings")
            .into_iter()
            .map(|r| r.into_iter().map(|x| x as f32).collect())
            .collect(),
    }
}

fn normalized(v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn embed_request(id: &str, ids: &[u32]) -> Request {
    let mut r = Request::new(id, ids.to_vec(), greedy(1));
    r.embed = true;
    r
}

fn check(name: &str) {
    let g = golden(name);
    let tok = common::load(name).1;
    // The server tokenizes with the model's special tokens: the same ids as the golden.
    let path = indus::loader::repo_fixture("encoders").join("decoder-embed-golden.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (i, text) in v[name]["inputs"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            tok.encode(text.as_str().unwrap(), true).unwrap(),
            g.token_ids[i],
            "{name} input {i}"
        );
    }
    // Small step budget: the 337-token input is prefilled in several chunks.
    let config = EngineConfig {
        num_blocks: 256,
        max_model_len: 512,
        scheduler: SchedulerConfig {
            max_num_batched_tokens: 64,
            ..SchedulerConfig::default()
        },
        ..EngineConfig::default()
    };
    let handle = engine(name, config);
    let generate_prompt = common::prompts(&[40], 3).remove(0);
    let alone_tokens = run_alone(&handle, &generate_prompt, greedy(24));
    // All embeddings and a generation submitted together: mixed steps.
    let streams: Vec<_> = g
        .token_ids
        .iter()
        .enumerate()
        .map(|(i, ids)| handle.submit(embed_request(&format!("e{i}"), ids)).unwrap())
        .collect();
    let generation = handle
        .submit(Request::new("g", generate_prompt.clone(), greedy(24)))
        .unwrap();
    let mut worst = 0f32;
    for (i, s) in streams.into_iter().enumerate() {
        let done = s.blocking_collect().unwrap();
        assert!(done.choices[0].token_ids.is_empty(), "nothing is sampled");
        assert_eq!(done.num_prompt_tokens, g.token_ids[i].len());
        let e = normalized(done.embedding.expect("an embedding"));
        worst = worst.max(max_abs(&e, &g.embeddings[i]));
    }
    assert!(worst < 1e-4, "{name}: max abs difference {worst}");
    let together = generation.blocking_collect().unwrap().choices[0]
        .token_ids
        .clone();
    assert_eq!(
        together, alone_tokens,
        "generation unchanged by embedding requests beside it"
    );
    // One alone gives the same vector as in the crowd (batching invariance).
    let again = handle
        .submit(embed_request("again", &g.token_ids[2]))
        .unwrap()
        .blocking_collect()
        .unwrap();
    let again = normalized(again.embedding.unwrap());
    assert!(max_abs(&again, &g.embeddings[2]) < 1e-4);
    assert_all_blocks_free(&handle);
    println!("{name}: decoder embeddings vs transformers, max abs difference {worst:.2e}");
}

#[test]
fn llama_decoder_embeddings_match_transformers() {
    check("tiny-llama");
}

#[test]
fn qwen3_decoder_embeddings_match_transformers() {
    check("tiny-qwen3");
}

#[test]
fn embedding_requests_have_one_choice_and_fit_the_context() {
    let handle = engine(
        "tiny-llama",
        EngineConfig {
            max_model_len: 64,
            ..EngineConfig::default()
        },
    );
    let mut r = embed_request("n2", &[1, 2, 3]);
    r.params.n = 2;
    assert!(handle.validate(&r).is_err());
    let long: Vec<u32> = (0..65).map(|i| 3 + i).collect();
    let e = handle.validate(&embed_request("long", &long)).unwrap_err();
    assert!(e.to_string().contains("64"), "{e}");
    // Exactly the context is fine for an embedding (nothing is generated after it).
    let fits: Vec<u32> = (0..64).map(|i| 3 + i).collect();
    assert!(handle.validate(&embed_request("fits", &fits)).is_ok());
}
