//! Mixture-of-experts feed-forward: each token's hidden state through its `k` chosen experts'
//! SwiGLU MLPs, the outputs summed with the router's weights.
//!
//! [`fused_moe`] groups the batch by expert first, so each expert runs one GEMM per projection
//! over all of its tokens (gate/up fused, then down) instead of one small GEMM per token and
//! choice; outputs are scattered back with their routing weight by one `index_add` per expert.
//! It is built from candle ops (gather, matmul, the SwiGLU kernel, `index_add`), so it runs on
//! any device; the grouping reads the routing on the host (one small copy per layer and step).
//!
//! [`fused_moe_with`]`(.., MoePath::Grouped)` runs the same computation on CUDA as three
//! launches whatever the number of experts (kernels/cuda/moe.cu): gate/up for every expert's
//! tokens with the gather and the SwiGLU fused in, down, then the weighted sum of each token's
//! choices. Its tiles come from a [`MoePlan`] made on the host. It is not yet the default:
//! it has not been timed against the per-expert GEMMs on a GPU (`scripts/gpu-check.sh` does).
//!
//! [`fused_moe_reference`] is the plain per-token, per-choice loop in f32 that the grouped path
//! is checked against.

use crate::silu_mul;
use candle_core::{DType, Result, Tensor};

/// The weights of every expert of one layer, stacked.
pub struct ExpertWeights<'a> {
    /// `[experts, 2 * inter, hidden]`: gate rows, then up rows.
    pub gate_up: &'a Tensor,
    /// `[experts, hidden, inter]`.
    pub down: &'a Tensor,
}

fn check_shapes(x: &Tensor, ids: &Tensor, weights: &Tensor, w: &ExpertWeights) -> Result<()> {
    let (t, h) = x.dims2()?;
    let (e, two_i, h2) = w.gate_up.dims3()?;
    let (e2, h3, i) = w.down.dims3()?;
    let (t2, k) = ids.dims2()?;
    if h2 != h || h3 != h || e2 != e || two_i != 2 * i || t2 != t || weights.dims2()? != (t, k) {
        candle_core::bail!(
            "fused_moe: x {:?}, ids {:?}, weights {:?}, gate_up {:?}, down {:?} do not agree",
            x.dims(),
            ids.dims(),
            weights.dims(),
            w.gate_up.dims(),
            w.down.dims()
        );
    }
    Ok(())
}

/// How [`fused_moe_with`] runs the experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MoePath {
    /// One GEMM per expert and projection through candle (any device).
    #[default]
    ExpertGemms,
    /// The grouped kernels: three launches for all experts (CUDA; elsewhere the expert GEMMs).
    Grouped,
}

/// The batch's (token, choice) pairs sorted by expert into slots, and those slots cut into
/// row tiles of at most `MOE_BM` within one expert: what the grouped kernels iterate over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoePlan {
    /// Token of each slot; an expert's slots are contiguous and in token order.
    pub slot_token: Vec<u32>,
    /// Slot of each flat choice `token * k + j`.
    pub slot_of: Vec<u32>,
    pub tile_expert: Vec<u32>,
    pub tile_start: Vec<u32>,
    pub tile_len: Vec<u32>,
}

impl MoePlan {
    /// `ids`: the flat `[tokens * k]` expert of each choice.
    pub fn new(ids: &[u32], k: usize, num_experts: usize, tile_rows: usize) -> Result<Self> {
        let mut count = vec![0usize; num_experts];
        for &e in ids {
            let e = e as usize;
            if e >= num_experts {
                candle_core::bail!("fused_moe: expert id {e} out of {num_experts}");
            }
            count[e] += 1;
        }
        let mut start = vec![0usize; num_experts + 1];
        for e in 0..num_experts {
            start[e + 1] = start[e] + count[e];
        }
        let mut next = start.clone();
        let mut slot_token = vec![0u32; ids.len()];
        let mut slot_of = vec![0u32; ids.len()];
        for (flat, &e) in ids.iter().enumerate() {
            let slot = next[e as usize];
            next[e as usize] += 1;
            slot_token[slot] = (flat / k.max(1)) as u32;
            slot_of[flat] = slot as u32;
        }
        let (mut tile_expert, mut tile_start, mut tile_len) = (Vec::new(), Vec::new(), Vec::new());
        for e in 0..num_experts {
            let mut s = start[e];
            while s < start[e + 1] {
                let len = tile_rows.min(start[e + 1] - s);
                tile_expert.push(e as u32);
                tile_start.push(s as u32);
                tile_len.push(len as u32);
                s += len;
            }
        }
        Ok(Self {
            slot_token,
            slot_of,
            tile_expert,
            tile_start,
            tile_len,
        })
    }
}

/// `x`: `[tokens, hidden]`; `ids`: `[tokens, k]` u32 expert of each choice; `weights`:
/// `[tokens, k]` its routing weight (any float dtype). Returns `[tokens, hidden]` in x's dtype.
pub fn fused_moe(x: &Tensor, ids: &Tensor, weights: &Tensor, w: &ExpertWeights) -> Result<Tensor> {
    fused_moe_with(x, ids, weights, w, MoePath::default())
}

/// [`fused_moe`] by the chosen path.
pub fn fused_moe_with(
    x: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
    w: &ExpertWeights,
    path: MoePath,
) -> Result<Tensor> {
    check_shapes(x, ids, weights, w)?;
    #[cfg(feature = "cuda")]
    if path == MoePath::Grouped && x.device().is_cuda() {
        let ids_host: Vec<u32> = ids.flatten_all()?.to_vec1()?;
        let plan = MoePlan::new(
            &ids_host,
            ids.dim(1)?,
            w.gate_up.dim(0)?,
            crate::shared::MOE_BM,
        )?;
        return crate::cuda::moe::grouped(x, &plan, weights, ids.dim(1)?, w);
    }
    let _ = path;
    let (t, h) = x.dims2()?;
    let num_experts = w.gate_up.dim(0)?;
    let k = ids.dim(1)?;
    let ids_host: Vec<u32> = ids.flatten_all()?.to_vec1()?;
    // Tokens of each expert, with the flat index of the choice that sent them.
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); num_experts];
    let mut choices: Vec<Vec<u32>> = vec![Vec::new(); num_experts];
    for (flat, &e) in ids_host.iter().enumerate() {
        let e = e as usize;
        if e >= num_experts {
            candle_core::bail!("fused_moe: expert id {e} out of {num_experts}");
        }
        rows[e].push((flat / k) as u32);
        choices[e].push(flat as u32);
    }
    let flat_weights = weights.to_dtype(DType::F32)?.flatten_all()?;
    let mut out = Tensor::zeros((t, h), DType::F32, x.device())?;
    for e in 0..num_experts {
        if rows[e].is_empty() {
            continue;
        }
        let n = rows[e].len();
        let idx = Tensor::from_vec(std::mem::take(&mut rows[e]), n, x.device())?;
        let choice = Tensor::from_vec(std::mem::take(&mut choices[e]), n, x.device())?;
        let xs = x.index_select(&idx, 0)?;
        let gate_up = xs.matmul(&w.gate_up.get(e)?.t()?)?;
        let y = silu_mul(&gate_up)?.matmul(&w.down.get(e)?.t()?)?;
        let scale = flat_weights.index_select(&choice, 0)?.unsqueeze(1)?;
        let y = y.to_dtype(DType::F32)?.broadcast_mul(&scale)?;
        out = out.index_add(&idx, &y, 0)?;
    }
    out.to_dtype(x.dtype())
}

/// The same result, token by token and choice by choice, in f32 on the host.
pub fn fused_moe_reference(
    x: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
    w: &ExpertWeights,
) -> Result<Tensor> {
    check_shapes(x, ids, weights, w)?;
    let (t, h) = x.dims2()?;
    let i = w.down.dim(2)?;
    let k = ids.dim(1)?;
    let host =
        |t: &Tensor| -> Result<Vec<f32>> { t.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
    let (xv, wv) = (host(x)?, host(weights)?);
    let (gu, dn) = (host(w.gate_up)?, host(w.down)?);
    let idv: Vec<u32> = ids.flatten_all()?.to_vec1()?;
    let mut out = vec![0f32; t * h];
    for tok in 0..t {
        let xt = &xv[tok * h..][..h];
        for c in 0..k {
            let e = idv[tok * k + c] as usize;
            let gu_e = &gu[e * 2 * i * h..][..2 * i * h];
            let act: Vec<f32> = (0..i)
                .map(|r| {
                    let dot = |row: usize| -> f32 {
                        gu_e[row * h..][..h]
                            .iter()
                            .zip(xt)
                            .map(|(a, b)| a * b)
                            .sum()
                    };
                    let (g, u) = (dot(r), dot(i + r));
                    g / (1.0 + (-g).exp()) * u
                })
                .collect();
            let dn_e = &dn[e * h * i..][..h * i];
            let scale = wv[tok * k + c];
            for (o, row) in out[tok * h..][..h].iter_mut().zip(dn_e.chunks(i)) {
                *o += scale * row.iter().zip(&act).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }
    Tensor::from_vec(out, (t, h), x.device())?.to_dtype(x.dtype())
}

/// The router's choice: softmax over the experts' logits (in f32), the `k` largest, and —
/// when `renormalize` (Mixtral, Qwen3-MoE's `norm_topk_prob`) — those `k` rescaled to sum
/// to one. Returns `(ids [tokens, k] u32, weights [tokens, k] f32)`, on the logits' device.
pub fn route_top_k(logits: &Tensor, k: usize, renormalize: bool) -> Result<(Tensor, Tensor)> {
    let probs = softmax_rows(&logits.to_dtype(DType::F32)?)?;
    let order = probs.arg_sort_last_dim(false)?;
    let ids = order.narrow(1, 0, k)?.contiguous()?;
    let top = probs.gather(&ids, 1)?;
    let top = if renormalize {
        top.broadcast_div(&top.sum_keepdim(1)?)?
    } else {
        top
    };
    Ok((ids, top))
}

/// Softmax over the last dimension of `[rows, n]` (max-subtracted).
fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elem::test_tensors::max_abs_diff as max_diff;
    use candle_core::Device;

    /// Uniform in [-0.5, 0.5), seeded.
    fn random(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::check::metrics::Rng::new(seed);
        let v: Vec<f32> = (0..shape.iter().product())
            .map(|_| rng.uniform() - 0.5)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_plan_sorts_choices_by_expert_and_tiles_each_expert() {
        // 5 tokens, top 2 of 3 experts; tiles of at most 2 rows.
        let ids = [0, 2, 2, 0, 1, 2, 0, 2, 2, 1];
        let plan = MoePlan::new(&ids, 2, 3, 2).unwrap();
        // Expert 0: tokens 0, 1, 3; expert 1: 2, 4; expert 2: 0, 1, 2, 3, 4.
        assert_eq!(plan.slot_token, [0, 1, 3, 2, 4, 0, 1, 2, 3, 4]);
        for (flat, &slot) in plan.slot_of.iter().enumerate() {
            assert_eq!(plan.slot_token[slot as usize] as usize, flat / 2);
        }
        assert_eq!(plan.tile_expert, [0, 0, 1, 2, 2, 2]);
        assert_eq!(plan.tile_start, [0, 2, 3, 5, 7, 9]);
        assert_eq!(plan.tile_len, [2, 1, 2, 2, 2, 1]);
        assert!(MoePlan::new(&[3], 1, 3, 2).is_err());
    }

    #[test]
    fn grouped_equals_the_per_token_reference() {
        let (t, h, i, e, k) = (37, 24, 20, 6, 2);
        let x = random(&[t, h], 1);
        let gate_up = random(&[e, 2 * i, h], 2);
        let down = random(&[e, h, i], 3);
        let (ids, weights) = route_top_k(&random(&[t, e], 4), k, true).unwrap();
        let w = ExpertWeights {
            gate_up: &gate_up,
            down: &down,
        };
        let got = fused_moe(&x, &ids, &weights, &w).unwrap();
        let want = fused_moe_reference(&x, &ids, &weights, &w).unwrap();
        assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
        // Some expert gets no token in a one-token batch: skipped, not an error.
        let one = fused_moe(
            &x.narrow(0, 0, 1).unwrap(),
            &ids.narrow(0, 0, 1).unwrap(),
            &weights.narrow(0, 0, 1).unwrap(),
            &w,
        )
        .unwrap();
        assert!(max_diff(&one, &want.narrow(0, 0, 1).unwrap()) < 1e-5);
    }

    #[test]
    fn routing_takes_the_largest_and_renormalizes() {
        let logits = Tensor::new(
            &[[0.0f32, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 3.5]],
            &Device::Cpu,
        )
        .unwrap();
        let (ids, w) = route_top_k(&logits, 2, true).unwrap();
        assert_eq!(ids.to_vec2::<u32>().unwrap(), vec![vec![1, 2], vec![3, 0]]);
        let w = w.to_vec2::<f32>().unwrap();
        let e = std::f32::consts::E;
        assert!((w[0][0] - e / (e + 1.0)).abs() < 1e-6 && (w[0][0] + w[0][1] - 1.0).abs() < 1e-6);
        let (_, raw) = route_top_k(&logits, 2, false).unwrap();
        let raw = raw.to_vec2::<f32>().unwrap();
        assert!(raw[0][0] + raw[0][1] < 0.95, "{raw:?}");
    }

    #[test]
    fn bad_expert_ids_are_errors() {
        let x = random(&[2, 4], 1);
        let gate_up = random(&[2, 6, 4], 2);
        let down = random(&[2, 4, 3], 3);
        let ids = Tensor::new(&[[0u32], [5]], &Device::Cpu).unwrap();
        let weights = Tensor::ones((2, 1), DType::F32, &Device::Cpu).unwrap();
        let w = ExpertWeights {
            gate_up: &gate_up,
            down: &down,
        };
        assert!(fused_moe(&x, &ids, &weights, &w).is_err());
    }
}
