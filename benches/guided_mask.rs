//! What a grammar costs per sampled token: llguidance's mask (the set of tokens allowed
//! next) and the matcher's advance, for a nested JSON schema over the fixture's 32k Llama 2
//! vocabulary, one choice and 64 choices stepped together, on one thread and on a pool of one
//! thread per core (the engine's mask pool, which runs beside the forward pass). Each walk samples allowed tokens at random, so it
//! visits strings, numbers, enums and structure. Run: `cargo bench --bench guided_mask`;
//! divide by the 32 steps of a walk for the time per step.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use indus::guided::{Constraint, GrammarCompiler, Matcher};
use indus::tokenizer::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::Arc;

const STEPS: usize = 32;

fn tokenizer() -> Arc<Tokenizer> {
    let dir = indus::loader::repo_fixture("tiny-llama");
    Arc::new(Tokenizer::from_dir(&dir, &[], None).expect("the fixture tokenizer"))
}

fn ticket_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "customer": {"type": "object", "properties": {
                "name": {"type": "string", "maxLength": 24},
                "tier": {"enum": ["prepaid", "postpaid"]}},
                "required": ["name", "tier"], "additionalProperties": false},
            "tags": {"type": "array", "items": {"enum": ["billing", "network", "sim"]},
                "minItems": 1, "maxItems": 3},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "notes": {"type": "string"},
            "urgent": {"type": "boolean"}},
        "required": ["customer", "tags", "priority", "notes", "urgent"],
        "additionalProperties": false,
    })
}

/// One step of one walk: its mask, then a random allowed token consumed.
fn step_one(m: &mut Matcher, rng: &mut ChaCha8Rng) {
    if m.is_stopped() {
        return;
    }
    let mask = m.compute_mask_or_eos().expect("mask");
    let allowed = mask.to_list();
    let token = allowed[rng.random_range(0..allowed.len())];
    let _ = m.consume_token(token);
}

/// One step of every walk, one after another.
fn step(matchers: &mut [Matcher], rng: &mut ChaCha8Rng) {
    for m in matchers.iter_mut() {
        step_one(m, rng);
    }
}

/// One step of every walk on `pool`, each walk with its own seeded RNG.
fn step_pooled(pool: &rayon::ThreadPool, walks: &mut [(Matcher, ChaCha8Rng)]) {
    pool.install(|| walks.par_iter_mut().for_each(|(m, rng)| step_one(m, rng)));
}

fn masks(c: &mut Criterion) {
    let tok = tokenizer();
    let compiler = GrammarCompiler::new(&tok, 4).expect("compiler");
    let grammar = compiler
        .compile(&Constraint::JsonSchema(ticket_schema()))
        .expect("grammar");
    let mut g = c.benchmark_group("guided");
    for batch in [1usize, 64] {
        g.bench_function(
            format!("json schema, {STEPS} steps x {batch} choices"),
            |b| {
                let mut rng = ChaCha8Rng::seed_from_u64(7);
                b.iter_batched(
                    || (0..batch).map(|_| grammar.matcher()).collect::<Vec<_>>(),
                    |mut ms| {
                        for _ in 0..STEPS {
                            step(&mut ms, &mut rng);
                        }
                        ms
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    g.bench_function(
        format!("json schema, {STEPS} steps x 64 choices, pool of {threads}"),
        |b| {
            b.iter_batched(
                || {
                    (0..64)
                        .map(|i| (grammar.matcher(), ChaCha8Rng::seed_from_u64(i)))
                        .collect::<Vec<_>>()
                },
                |mut walks| {
                    for _ in 0..STEPS {
                        step_pooled(&pool, &mut walks);
                    }
                    walks
                },
                BatchSize::LargeInput,
            )
        },
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = masks
}
criterion_main!(benches);
