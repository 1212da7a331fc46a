//! Micro-benchmarks of the engine's CPU-side hot paths: the block allocator, one scheduler
//! step at 256 running + 256 waiting sequences, and the sampler over a 128k vocabulary.
//! Run: `cargo bench --bench engine_core`.

use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use indus::engine::SamplingParams;
use indus::engine::sampler::{History, sample};
use indus::kv::KvCacheManager;
use indus::scheduler::{Scheduler, SchedulerConfig, Sequence};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn allocator(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv");
    g.bench_function("allocate+free 512-token seq (32 blocks)", |b| {
        let mut kv = KvCacheManager::new(4096, 16, false);
        let tokens: Vec<u32> = (0..512).collect();
        b.iter(|| {
            kv.allocate(1, &tokens, 0, 512, &[]).unwrap();
            kv.free(1);
        })
    });
    g.bench_function("allocate+hash+free 512-token seq, prefix caching", |b| {
        let mut kv = KvCacheManager::new(4096, 16, true);
        let mut n = 0u32;
        b.iter(|| {
            n += 1;
            let tokens: Vec<u32> = (0..512).map(|t| t + n).collect();
            kv.allocate(1, &tokens, 0, 512, &[]).unwrap();
            kv.free(1);
        })
    });
    g.bench_function("prefix lookup 2048 tokens (128 cached blocks)", |b| {
        let mut kv = KvCacheManager::new(4096, 16, true);
        let tokens: Vec<u32> = (0..2049).collect();
        kv.allocate(1, &tokens, 0, 2049, &[]).unwrap();
        b.iter(|| black_box(kv.cached_prefix(&tokens)))
    });
    g.bench_function("decode append: 1 slot for 256 seqs", |b| {
        let mut kv = KvCacheManager::new(65536, 16, false);
        let tokens: Vec<u32> = (0..4096).collect();
        for s in 0..256 {
            kv.allocate(s, &tokens[..100], 0, 100, &[]).unwrap();
        }
        let mut len = 100;
        b.iter(|| {
            for s in 0..256 {
                kv.allocate(s, &tokens[..len + 1], len, 1, &[]).unwrap();
            }
            len += 1;
            if len >= 4000 {
                for s in 0..256 {
                    kv.free(s);
                    kv.allocate(s, &tokens[..100], 0, 100, &[]).unwrap();
                }
                len = 100;
            }
        })
    });
    g.finish();
}

fn scheduler_step(c: &mut Criterion) {
    c.bench_function("scheduler step: 256 running + 256 waiting", |b| {
        b.iter_batched(
            || {
                let mut kv = KvCacheManager::new(64 * 1024, 16, true);
                let mut s = Scheduler::new(SchedulerConfig {
                    max_num_batched_tokens: 8192,
                    max_num_seqs: 256,
                    enable_chunked_prefill: true,
                });
                for i in 0..256u64 {
                    s.add(Sequence::new(
                        i,
                        (0..200).map(|t| t + i as u32).collect(),
                        0,
                        i,
                    ));
                }
                // Run until all 256 are decoding.
                while s.num_running() < 256 || s.get(0).is_some_and(|q| q.is_prefilling()) {
                    let out = s.schedule(&mut kv);
                    s.step_done(&out);
                    for q in out.seqs.iter().filter(|q| q.samples) {
                        s.append_token(q.id, 1);
                    }
                }
                for i in 256..512u64 {
                    s.add(Sequence::new(
                        i,
                        (0..300).map(|t| t * 3 + i as u32).collect(),
                        0,
                        i,
                    ));
                }
                (s, kv)
            },
            |(mut s, mut kv)| black_box(s.schedule(&mut kv)),
            BatchSize::LargeInput,
        )
    });
}

fn sampler(c: &mut Criterion) {
    const VOCAB: usize = 128 * 1024;
    const BATCH: usize = 64;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let logits: Vec<Vec<f32>> = (0..BATCH)
        .map(|_| {
            (0..VOCAB)
                .map(|_| rng.random_range(-10.0f32..10.0))
                .collect()
        })
        .collect();
    let history = History {
        prompt: &[1, 2, 3],
        output: &[4, 5],
    };
    let mut g = c.benchmark_group("sampler 64 x 128k");
    for (name, params) in [
        ("greedy", SamplingParams::greedy()),
        (
            "temperature+top_k=50",
            SamplingParams {
                top_k: 50,
                ..Default::default()
            },
        ),
        (
            "temperature+top_p=0.9",
            SamplingParams {
                top_p: 0.9,
                ..Default::default()
            },
        ),
        (
            "greedy+logprobs=5",
            SamplingParams {
                logprobs: Some(5),
                ..SamplingParams::greedy()
            },
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || logits.clone(),
                |mut rows| {
                    let mut rng = ChaCha8Rng::seed_from_u64(1);
                    for row in rows.iter_mut() {
                        black_box(sample(row, &params, &history, None, &mut rng));
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = allocator, scheduler_step, sampler
}
criterion_main!(benches);
