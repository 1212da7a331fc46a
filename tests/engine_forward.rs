//! The paged, batched forward pass against (1) a plain contiguous-KV reference forward written
//! here, and (2) golden logits computed by Hugging Face transformers (scripts/make_fixtures.py).

mod common;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use common::{FIXTURES, fixture_dir, load};
use indus_kernels::AttentionMetadata;
use indus_kernels::metadata::HostAttentionMetadata;
use indus_models::rope::inverse_frequencies;
use indus_models::{CausalLm, ModelConfig, StepInput};
use std::collections::HashMap;

/// A deliberately simple Llama forward: one sequence, contiguous K/V, full causal softmax.
fn reference_logits(
    weights: &HashMap<String, Tensor>,
    cfg: &ModelConfig,
    tokens: &[u32],
) -> Tensor {
    let w = |n: &str| weights[n].to_dtype(DType::F32).unwrap();
    let t = tokens.len();
    let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let eps = cfg.rms_norm_eps;
    let rms = |x: &Tensor, g: &Tensor| -> Tensor {
        let ms = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        x.broadcast_div(&(ms + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(g)
            .unwrap()
    };
    let lin = |x: &Tensor, name: &str| -> Tensor {
        let y = x
            .matmul(&w(&format!("{name}.weight")).t().unwrap())
            .unwrap();
        match weights.get(&format!("{name}.bias")) {
            Some(b) => y.broadcast_add(&b.to_dtype(DType::F32).unwrap()).unwrap(),
            None => y,
        }
    };
    let inv = inverse_frequencies(cfg);
    let angles: Vec<f32> = (0..t)
        .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
        .collect();
    let angles = Tensor::from_vec(angles, (t, hd / 2), &Device::Cpu).unwrap();
    let (cos, sin) = (
        Tensor::cat(&[&angles.cos().unwrap(), &angles.cos().unwrap()], 1).unwrap(),
        Tensor::cat(&[&angles.sin().unwrap(), &angles.sin().unwrap()], 1).unwrap(),
    );
    let rope = |x: &Tensor| -> Tensor {
        // x: [t, heads, hd]; rotate_half
        let x1 = x.narrow(2, 0, hd / 2).unwrap();
        let x2 = x.narrow(2, hd / 2, hd / 2).unwrap();
        let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], 2).unwrap();
        (x.broadcast_mul(&cos.unsqueeze(1).unwrap()).unwrap()
            + rot.broadcast_mul(&sin.unsqueeze(1).unwrap()).unwrap())
        .unwrap()
    };
    let ids = Tensor::new(tokens, &Device::Cpu).unwrap();
    let mut x = w("model.embed_tokens.weight")
        .index_select(&ids, 0)
        .unwrap();
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        let h = rms(&x, &w(&format!("{p}.input_layernorm.weight")));
        let q = rope(
            &lin(&h, &format!("{p}.self_attn.q_proj"))
                .reshape((t, nh, hd))
                .unwrap(),
        );
        let k = rope(
            &lin(&h, &format!("{p}.self_attn.k_proj"))
                .reshape((t, nkv, hd))
                .unwrap(),
        );
        let v = lin(&h, &format!("{p}.self_attn.v_proj"))
            .reshape((t, nkv, hd))
            .unwrap();
        let mut heads = Vec::new();
        for head in 0..nh {
            let kv = head / (nh / nkv);
            let qh = q.i((.., head, ..)).unwrap().contiguous().unwrap();
            let kh = k.i((.., kv, ..)).unwrap().contiguous().unwrap();
            let vh = v.i((.., kv, ..)).unwrap().contiguous().unwrap();
            let scores = (qh.matmul(&kh.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
            let probs = candle_nn::ops::softmax_last_dim(&(scores + &mask).unwrap()).unwrap();
            heads.push(probs.matmul(&vh).unwrap());
        }
        let attn = Tensor::cat(&heads, 1).unwrap();
        x = (x + lin(&attn, &format!("{p}.self_attn.o_proj"))).unwrap();
        let h = rms(&x, &w(&format!("{p}.post_attention_layernorm.weight")));
        let gate = lin(&h, &format!("{p}.mlp.gate_proj"));
        let up = lin(&h, &format!("{p}.mlp.up_proj"));
        let act = (candle_nn::ops::silu(&gate).unwrap() * up).unwrap();
        x = (x + lin(&act, &format!("{p}.mlp.down_proj"))).unwrap();
    }
    let x = rms(&x, &w("model.norm.weight"));
    let head = if weights.contains_key("lm_head.weight") {
        w("lm_head.weight")
    } else {
        w("model.embed_tokens.weight")
    };
    x.matmul(&head.t().unwrap()).unwrap()
}

/// One step of a hand-built batch: `(seq, start, len)` chunks over the sequences' tokens.
/// Returns logits of every token of the step.
fn paged_step(
    model: &CausalLm,
    cache: &indus_models::KvCache,
    seqs: &[Vec<u32>],
    tables: &[Vec<u32>],
    chunks: &[(usize, usize, usize)],
    block_size: usize,
) -> Tensor {
    let mut host = HostAttentionMetadata::default();
    let (mut ids, mut pos) = (Vec::new(), Vec::new());
    host.max_blocks_per_seq = tables.iter().map(Vec::len).max().unwrap();
    host.query_start_loc.push(0);
    for &(s, start, len) in chunks {
        for p in start..start + len {
            ids.push(seqs[s][p]);
            pos.push(p as u32);
            host.slot_mapping
                .push((tables[s][p / block_size] as usize * block_size + p % block_size) as i64);
        }
        let mut row = tables[s].clone();
        row.resize(host.max_blocks_per_seq, 0);
        host.block_tables.extend(row);
        host.context_lens.push((start + len) as u32);
        host.query_start_loc.push(ids.len() as u32);
    }
    let n = ids.len();
    let dev = Device::Cpu;
    let attention = AttentionMetadata::new(host, &dev).unwrap();
    let all: Vec<u32> = (0..n as u32).collect();
    model
        .forward(
            &StepInput {
                input_ids: &Tensor::new(ids.as_slice(), &dev).unwrap(),
                positions: &Tensor::new(pos.as_slice(), &dev).unwrap(),
                attention: &attention,
                logits_indices: &Tensor::new(all.as_slice(), &dev).unwrap(),
            },
            cache,
        )
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn paged_batched_forward_matches_contiguous_reference() {
    for name in FIXTURES {
        let (model, _) = load(name);
        let weights = candle_core::safetensors::load(
            fixture_dir(name).join("model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let bs = 4;
        let lengths = [21usize, 8, 1, 13];
        let seqs = common::prompts(&lengths, 7);
        // Scattered, interleaved block ids: paging must not depend on contiguity.
        let cache = model.new_kv_cache(40, bs).unwrap();
        let mut next = (0..40u32).rev().collect::<Vec<_>>();
        let tables: Vec<Vec<u32>> = lengths
            .iter()
            .map(|&l| {
                (0..l.div_ceil(bs))
                    .map(|_| next.pop().unwrap() * 7 % 40)
                    .collect()
            })
            .collect();
        // Step 1: partial prefills of seqs 0 and 3, full prefill of 1 and 2 except their
        // last token. Step 2: the rest, decode-style single tokens mixed with a chunk.
        let step1 = [(0, 0, 10), (1, 0, 7), (3, 0, 5)];
        let step2 = [(0, 10, 11), (1, 7, 1), (2, 0, 1), (3, 5, 8)];
        let l1 = paged_step(&model, &cache, &seqs, &tables, &step1, bs);
        let l2 = paged_step(&model, &cache, &seqs, &tables, &step2, bs);
        let mut row1 = 0;
        let mut row2 = 0;
        for (s, seq) in seqs.iter().enumerate() {
            let reference = reference_logits(&weights, model.config(), seq);
            for &(cs, start, len) in &step1 {
                if cs == s {
                    let got = l1.narrow(0, row1, len).unwrap();
                    let want = reference.narrow(0, start, len).unwrap();
                    let d = max_abs_diff(&got, &want);
                    assert!(d < 1e-4, "{name} seq {s} step 1: max diff {d}");
                }
            }
            for &(cs, start, len) in &step2 {
                if cs == s {
                    let got = l2.narrow(0, row2, len).unwrap();
                    let want = reference.narrow(0, start, len).unwrap();
                    let d = max_abs_diff(&got, &want);
                    assert!(d < 1e-4, "{name} seq {s} step 2: max diff {d}");
                }
            }
            row1 += step1
                .iter()
                .filter(|c| c.0 == s)
                .map(|c| c.2)
                .sum::<usize>();
            row2 += step2
                .iter()
                .filter(|c| c.0 == s)
                .map(|c| c.2)
                .sum::<usize>();
        }
    }
}

#[test]
fn logits_match_transformers_golden() {
    for name in FIXTURES {
        let (model, tokenizer) = load(name);
        let golden = candle_core::safetensors::load(
            fixture_dir(name).join("golden.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let texts = [
            "The quick brown fox jumps over the lazy dog.",
            "پاکستان ایک خوبصورت ملک ہے",
            "你好，世界 🌍🚀",
        ];
        for (i, text) in texts.iter().enumerate() {
            let ids: Vec<u32> = golden[&format!("input_ids_{i}")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let ours = tokenizer.encode(text, true).unwrap();
            if i == 0 {
                assert_eq!(ours, ids, "{name}: tokenization of prompt {i}");
            }
            let t = ids.len();
            let cache = model.new_kv_cache(t.div_ceil(16), 16).unwrap();
            let table = vec![(0..t.div_ceil(16) as u32).collect::<Vec<_>>()];
            let logits = paged_step(
                &model,
                &cache,
                std::slice::from_ref(&ids),
                &table,
                &[(0, 0, t)],
                16,
            );
            let last = logits.get(t - 1).unwrap();
            let d = max_abs_diff(&last, &golden[&format!("last_logits_{i}")]);
            assert!(
                d < 1e-3,
                "{name} prompt {i}: last-position logits differ by {d}"
            );
            let head = logits.narrow(1, 0, 512).unwrap();
            let d = max_abs_diff(&head, &golden[&format!("all_logits_head_{i}")]);
            assert!(
                d < 1e-3,
                "{name} prompt {i}: per-position logits differ by {d}"
            );
            let argmax: Vec<u32> = logits.argmax(D::Minus1).unwrap().to_vec1().unwrap();
            let want: Vec<u32> = golden[&format!("argmax_{i}")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(argmax, want, "{name} prompt {i}: argmax per position");
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    for name in FIXTURES {
        let golden = candle_core::safetensors::load(
            fixture_dir(name).join("golden.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let handle = common::engine(name, indus::engine::EngineConfig::default());
        for i in 0..3 {
            let ids: Vec<u32> = golden[&format!("input_ids_{i}")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let want: Vec<u32> = golden[&format!("greedy_{i}")]
                .to_dtype(DType::U32)
                .unwrap()
                .to_vec1()
                .unwrap();
            let got = common::run_alone(&handle, &ids, common::greedy(want.len()));
            assert_eq!(got, want, "{name} prompt {i}");
        }
    }
}
