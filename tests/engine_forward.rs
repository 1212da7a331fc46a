//! The paged, batched forward pass against (1) a plain contiguous-KV reference forward written
//! here, and (2) golden logits computed by Hugging Face transformers (scripts/make_fixtures.py).

mod common;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use common::{FIXTURES, fixture_dir, load};
use indus_kernels::AttentionMetadata;
use indus_kernels::metadata::HostAttentionMetadata;
use indus_models::rope::{attention_factor, inverse_frequencies};
use indus_models::{CausalLm, ModelConfig, StepInput};
use std::collections::HashMap;

/// Phi-3's fused `qkv_proj` and `gate_up_proj` split into the separate projections the
/// reference reads (rows q, k, v; gate, up).
fn split_fused(weights: &HashMap<String, Tensor>, cfg: &ModelConfig) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    let hd = cfg.head_dim;
    for (name, t) in weights {
        let split = |parts: &[(&str, usize)], from: &str| -> Vec<(String, Tensor)> {
            let mut start = 0;
            parts
                .iter()
                .map(|&(to, rows)| {
                    let piece = t.narrow(0, start, rows).unwrap();
                    start += rows;
                    (name.replace(from, to), piece)
                })
                .collect()
        };
        let pieces = if name.ends_with("qkv_proj.weight") {
            split(
                &[
                    ("q_proj", cfg.num_heads * hd),
                    ("k_proj", cfg.num_kv_heads * hd),
                    ("v_proj", cfg.num_kv_heads * hd),
                ],
                "qkv_proj",
            )
        } else if name.ends_with("gate_up_proj.weight") {
            let i = cfg.intermediate_size;
            split(&[("gate_proj", i), ("up_proj", i)], "gate_up_proj")
        } else {
            vec![(name.clone(), t.clone())]
        };
        out.extend(pieces);
    }
    out
}

/// A deliberately simple forward of the Llama family (with Qwen3's q/k norms when the weights
/// have them, Phi-3's fused projections, LongRoPE and partial rotary) and of Gemma 2/3 (post
/// norms, GeGLU, windows, soft-caps, local rope): one sequence, contiguous K/V, a masked
/// softmax.
fn reference_logits(
    weights: &HashMap<String, Tensor>,
    cfg: &ModelConfig,
    tokens: &[u32],
) -> Tensor {
    let weights = &split_fused(weights, cfg);
    let w = |n: &str| weights[n].to_dtype(DType::F32).unwrap();
    let gemma = cfg.gemma.as_ref();
    // Gemma's norms multiply by (1 + w).
    let norm_w = |n: &str| match gemma {
        Some(_) => (w(n) + 1.0).unwrap(),
        None => w(n),
    };
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
    // The rotated part of each head (Phi-4-mini's partial rotary: less than all of it).
    let rd = cfg.rotary_dim;
    let tables = |cfg: &ModelConfig| {
        let inv = inverse_frequencies(cfg);
        let angles: Vec<f32> = (0..t)
            .flat_map(|p| inv.iter().map(move |f| p as f32 * f))
            .collect();
        let angles = Tensor::from_vec(angles, (t, rd / 2), &Device::Cpu).unwrap();
        // LongRoPE scales cos and sin (1 for every other rope).
        let scale = f64::from(attention_factor(cfg));
        let (cos, sin) = (
            (angles.cos().unwrap() * scale).unwrap(),
            (angles.sin().unwrap() * scale).unwrap(),
        );
        (
            Tensor::cat(&[&cos, &cos], 1).unwrap(),
            Tensor::cat(&[&sin, &sin], 1).unwrap(),
        )
    };
    let global = tables(cfg);
    // Gemma 3's sliding layers: their own base, no scaling.
    let local = gemma.and_then(|g| g.rope_local_theta).map(|theta| {
        tables(&ModelConfig {
            rope_theta: theta,
            rope_scaling: None,
            ..cfg.clone()
        })
    });
    let rope = |x: &Tensor, (cos, sin): &(Tensor, Tensor)| -> Tensor {
        // x: [t, heads, hd]; rotate_half over the first rd dimensions, the rest unchanged.
        let (xr, pass) = (
            x.narrow(2, 0, rd).unwrap(),
            x.narrow(2, rd, hd - rd).unwrap(),
        );
        let x1 = xr.narrow(2, 0, rd / 2).unwrap();
        let x2 = xr.narrow(2, rd / 2, rd / 2).unwrap();
        let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], 2).unwrap();
        let rotated = (xr.broadcast_mul(&cos.unsqueeze(1).unwrap()).unwrap()
            + rot.broadcast_mul(&sin.unsqueeze(1).unwrap()).unwrap())
        .unwrap();
        Tensor::cat(&[&rotated, &pass], 2).unwrap()
    };
    let ids = Tensor::new(tokens, &Device::Cpu).unwrap();
    let mut x = w("model.embed_tokens.weight")
        .index_select(&ids, 0)
        .unwrap();
    if gemma.is_some() {
        x = (x * (cfg.hidden_size as f64).sqrt()).unwrap();
    }
    // Causal, and within the layer's window: key j visible to query i when i - w < j <= i.
    let mask = |window: Option<usize>| {
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..t).map(move |j| {
                    let inside = j <= i && window.is_none_or(|w| i - j < w);
                    if inside { 0.0 } else { f32::NEG_INFINITY }
                })
            })
            .collect();
        Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap()
    };
    let scale = match gemma {
        Some(g) => 1.0 / g.query_pre_attn_scalar.sqrt(),
        None => 1.0 / (hd as f64).sqrt(),
    };
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        let window = gemma.and_then(|g| g.layer_windows[l]);
        let mask = mask(window);
        let rot = match (&local, window) {
            (Some(local), Some(_)) => local,
            _ => &global,
        };
        let h = rms(&x, &norm_w(&format!("{p}.input_layernorm.weight")));
        // Qwen3: per-head RMSNorm of q and k before rotary.
        let head_norm = |x: Tensor, name: &str| -> Tensor {
            match weights.get(&format!("{p}.self_attn.{name}.weight")) {
                Some(_) => rms(&x, &norm_w(&format!("{p}.self_attn.{name}.weight"))),
                None => x,
            }
        };
        let q = rope(
            &head_norm(
                lin(&h, &format!("{p}.self_attn.q_proj"))
                    .reshape((t, nh, hd))
                    .unwrap(),
                "q_norm",
            ),
            rot,
        );
        let k = rope(
            &head_norm(
                lin(&h, &format!("{p}.self_attn.k_proj"))
                    .reshape((t, nkv, hd))
                    .unwrap(),
                "k_norm",
            ),
            rot,
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
            let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
            let scores = match gemma.and_then(|g| g.attn_logit_softcapping) {
                Some(c) => ((scores / c).unwrap().tanh().unwrap() * c).unwrap(),
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&(scores + &mask).unwrap()).unwrap();
            heads.push(probs.matmul(&vh).unwrap());
        }
        let attn = Tensor::cat(&heads, 1).unwrap();
        let attn = lin(&attn, &format!("{p}.self_attn.o_proj"));
        let swiglu = |h: &Tensor, prefix: &str, [g, u, d]: [&str; 3]| {
            let gate = lin(h, &format!("{prefix}.{g}"));
            let up = lin(h, &format!("{prefix}.{u}"));
            let act = match gemma {
                Some(_) => gate.gelu().unwrap(),
                None => candle_nn::ops::silu(&gate).unwrap(),
            };
            lin(&(act * up).unwrap(), &format!("{prefix}.{d}"))
        };
        const QWEN: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];
        // Mixtral's and Qwen-MoE's experts: each token's top-k experts by softmax of the
        // router, one token at a time.
        let moe = |h: &Tensor, block: &str, names: [&str; 3]| {
            let m = cfg.moe.as_ref().unwrap();
            let probs =
                candle_nn::ops::softmax_last_dim(&lin(h, &format!("{block}.gate"))).unwrap();
            let probs: Vec<Vec<f32>> = probs.to_vec2().unwrap();
            let rows: Vec<Tensor> = (0..t)
                .map(|r| {
                    let mut order: Vec<usize> = (0..m.num_experts).collect();
                    order.sort_by(|&a, &b| probs[r][b].total_cmp(&probs[r][a]));
                    let top = &order[..m.top_k];
                    let sum: f32 = top.iter().map(|&e| probs[r][e]).sum();
                    let x = h.narrow(0, r, 1).unwrap();
                    let mut acc =
                        Tensor::zeros((1, cfg.hidden_size), DType::F32, &Device::Cpu).unwrap();
                    for &e in top {
                        let weight = if m.renormalize {
                            probs[r][e] / sum
                        } else {
                            probs[r][e]
                        };
                        let y = swiglu(&x, &format!("{block}.experts.{e}"), names);
                        acc = (acc + (y * f64::from(weight)).unwrap()).unwrap();
                    }
                    acc
                })
                .collect();
            let out = Tensor::cat(&rows, 0).unwrap();
            match weights.get(&format!("{block}.shared_expert_gate.weight")) {
                None => out,
                Some(_) => {
                    let g =
                        candle_nn::ops::sigmoid(&lin(h, &format!("{block}.shared_expert_gate")))
                            .unwrap();
                    let shared = swiglu(h, &format!("{block}.shared_expert"), QWEN);
                    (out + shared.broadcast_mul(&g).unwrap()).unwrap()
                }
            }
        };
        let mlp = |h: &Tensor| {
            if weights.contains_key(&format!("{p}.block_sparse_moe.gate.weight")) {
                moe(h, &format!("{p}.block_sparse_moe"), ["w1", "w3", "w2"])
            } else if weights.contains_key(&format!("{p}.mlp.gate.weight")) {
                moe(h, &format!("{p}.mlp"), QWEN)
            } else {
                swiglu(h, &format!("{p}.mlp"), QWEN)
            }
        };
        if gemma.is_some() {
            let post = |n: &str, y: &Tensor| rms(y, &norm_w(&format!("{p}.{n}.weight")));
            x = (x + post("post_attention_layernorm", &attn)).unwrap();
            let h = post("pre_feedforward_layernorm", &x);
            x = (&x + post("post_feedforward_layernorm", &mlp(&h))).unwrap();
        } else {
            x = (x + attn).unwrap();
            let h = rms(&x, &w(&format!("{p}.post_attention_layernorm.weight")));
            x = (&x + mlp(&h)).unwrap();
        }
    }
    let x = rms(&x, &norm_w("model.norm.weight"));
    let head = if weights.contains_key("lm_head.weight") {
        w("lm_head.weight")
    } else {
        w("model.embed_tokens.weight")
    };
    let logits = x.matmul(&head.t().unwrap()).unwrap();
    match gemma.and_then(|g| g.final_logit_softcapping) {
        Some(c) => ((logits / c).unwrap().tanh().unwrap() * c).unwrap(),
        None => logits,
    }
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

/// 1e-4, or 5e-6 of the largest logit where logits are large (tiny-gemma2's reach ~50):
/// f32 summation order differs between the paged and contiguous paths.
fn tolerance(want: &Tensor) -> f32 {
    let amax = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    (5e-6 * amax).max(1e-4)
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
                    let (d, tol) = (max_abs_diff(&got, &want), tolerance(&want));
                    assert!(
                        d < tol,
                        "{name} seq {s} step 1: max diff {d} (tolerance {tol})"
                    );
                }
            }
            for &(cs, start, len) in &step2 {
                if cs == s {
                    let got = l2.narrow(0, row2, len).unwrap();
                    let want = reference.narrow(0, start, len).unwrap();
                    let (d, tol) = (max_abs_diff(&got, &want), tolerance(&want));
                    assert!(
                        d < tol,
                        "{name} seq {s} step 2: max diff {d} (tolerance {tol})"
                    );
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
            let logits = prefill_logits(&model, &ids);
            let last = logits.get(t - 1).unwrap();
            let d = max_abs_diff(&last, &golden[&format!("last_logits_{i}")]);
            eprintln!("{name} prompt {i} ({t} tokens): last-position max |diff| {d:.2e}");
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

/// Every position's logits of one prompt, prefilled in one step into a fresh cache.
fn prefill_logits(model: &CausalLm, ids: &[u32]) -> Tensor {
    let t = ids.len();
    let cache = model.new_kv_cache(t.div_ceil(16), 16).unwrap();
    let table = vec![(0..t.div_ceil(16) as u32).collect::<Vec<_>>()];
    paged_step(model, &cache, &[ids.to_vec()], &table, &[(0, 0, t)], 16)
}

/// A fixture's weights loaded under `cfg` (its own config, altered), run on golden prompt 1:
/// the prompt's length and how far the last-position logits are from transformers'.
fn golden_prompt_1_diff(dir: &std::path::Path, cfg: ModelConfig) -> (usize, f32) {
    let model = CausalLm::load_with_config(
        cfg,
        &[dir.join("model.safetensors")],
        &indus_models::LoadOptions::default(),
    )
    .unwrap();
    let golden =
        candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let ids: Vec<u32> = golden["input_ids_1"]
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec1()
        .unwrap();
    let t = ids.len();
    let logits = prefill_logits(&model, &ids);
    let d = max_abs_diff(&logits.get(t - 1).unwrap(), &golden["last_logits_1"]);
    (t, d)
}

/// The Gemma 3 fixture's 8-token window is shorter than its golden prompts: the same weights
/// with every layer global must miss the golden logits, so the golden test checks the window.
#[test]
fn gemma3_fixture_windows_change_the_logits() {
    let dir = fixture_dir("tiny-gemma3");
    let mut cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let g = cfg.gemma.as_mut().unwrap();
    assert!(g.layer_windows.iter().filter(|w| w.is_some()).count() == 5);
    g.layer_windows.iter_mut().for_each(|w| *w = None);
    let (t, d) = golden_prompt_1_diff(&dir, cfg);
    assert!(t > 8);
    assert!(d > 0.1, "without windows the logits still match (diff {d})");
}

/// The Gemma 2 fixture's golden logits pin both soft-caps and its alternating windows: the
/// same weights without the score cap, without the logit cap, or with every layer global
/// each miss them.
#[test]
fn gemma2_fixture_softcaps_and_windows_change_the_logits() {
    let dir = fixture_dir("tiny-gemma2");
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let g = cfg.gemma.clone().unwrap();
    assert_eq!(g.layer_windows, [Some(8), None, Some(8), None]);
    assert_eq!(
        (g.attn_logit_softcapping, g.final_logit_softcapping),
        (Some(5.0), Some(80.0))
    );
    let (t, d) = golden_prompt_1_diff(&dir, cfg.clone());
    assert!(t > 8);
    assert!(d < 1e-3, "{d}");
    let altered = |f: &dyn Fn(&mut indus_models::GemmaOptions)| {
        let mut c = cfg.clone();
        f(c.gemma.as_mut().unwrap());
        golden_prompt_1_diff(&dir, c).1
    };
    let no_score_cap = altered(&|g| g.attn_logit_softcapping = None);
    let no_logit_cap = altered(&|g| g.final_logit_softcapping = None);
    let all_global = altered(&|g| g.layer_windows.iter_mut().for_each(|w| *w = None));
    for (what, d) in [
        ("score cap", no_score_cap),
        ("logit cap", no_logit_cap),
        ("windows", all_global),
    ] {
        assert!(
            d > 0.1,
            "without the {what} the logits still match (diff {d})"
        );
    }
}

/// The Phi-3 fixture's golden logits pin its rope: the same weights with the short factors
/// (a context within the pretrained one), without the attention factor, or rotating whole
/// heads each miss them, so the golden test checks LongRoPE and the partial rotary.
#[test]
fn phi3_fixture_rope_choices_change_the_logits() {
    let dir = fixture_dir("tiny-phi3");
    let last_logit_diff = |cfg: ModelConfig| golden_prompt_1_diff(&dir, cfg).1;
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    assert_eq!((cfg.head_dim, cfg.rotary_dim), (16, 12));
    assert!(attention_factor(&cfg) > 3.0);
    assert!(last_logit_diff(cfg.clone()) < 1e-3);

    let short = ModelConfig {
        original_max_position_embeddings: Some(cfg.max_position_embeddings),
        ..cfg.clone()
    };
    assert_eq!(attention_factor(&short), 1.0);
    let d = last_logit_diff(short);
    assert!(d > 0.1, "short factors still match (diff {d})");

    let mut no_factor = cfg.clone();
    no_factor.rope_scaling.as_mut().unwrap().attention_factor = Some(1.0);
    let d = last_logit_diff(no_factor);
    assert!(
        d > 0.1,
        "without the attention factor the logits still match (diff {d})"
    );

    // Whole heads rotated: the factors of the first 6 of 8 frequencies, then plain ones.
    let mut full = cfg.clone();
    full.rotary_dim = full.head_dim;
    let s = full.rope_scaling.as_mut().unwrap();
    for f in [&mut s.short_factor, &mut s.long_factor] {
        f.as_mut().unwrap().extend([1.0, 1.0]);
    }
    let d = last_logit_diff(full);
    assert!(d > 0.1, "rotating whole heads still matches (diff {d})");
}
