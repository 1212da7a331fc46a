//! The small ops of a BERT-family encoder layer, fused and run in parallel on the caller's
//! rayon pool: candle's element-wise ops run on one process-wide pool shared with the chat
//! engine (so an embedding batch's adds queued behind, and slowed, chat steps), and each
//! unfused op is another pass and allocation. Every op has a reference composed of candle
//! ops, which other devices and dtypes use and the tests compare against.
//!
//! - [`split_qkv`]: bias add + split of the fused q/k/v projection into `[b, heads, l, d]`.
//! - [`masked_softmax`]: `softmax(scale · scores)` over each row's real keys (padding → 0).
//! - [`bias_residual_layer_norm`]: `LayerNorm(x + bias + residual)`.

use crate::elem::contiguous;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

fn cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => contiguous(v, l, op),
        other => Err(crate::elem::unsupported(op, other)),
    }
}

// ---------------------------------------------------------------------------------------

/// `qkv`: `[b * l, 3 * heads * d]` (q, k then v columns), `bias`: `[3 * heads * d]` →
/// `[3, b, heads, l, d]` (index 0 q, 1 k, 2 v), contiguous.
pub fn split_qkv(qkv: &Tensor, bias: &Tensor, b: usize, l: usize, heads: usize) -> Result<Tensor> {
    if cpu_f32(&[qkv, bias]) {
        qkv.contiguous()?
            .apply_op2_no_bwd(&bias.contiguous()?, &SplitQkv { b, l, heads })
    } else {
        split_qkv_reference(qkv, bias, b, l, heads)
    }
}

pub fn split_qkv_reference(
    qkv: &Tensor,
    bias: &Tensor,
    b: usize,
    l: usize,
    heads: usize,
) -> Result<Tensor> {
    let h3 = qkv.dim(1)?;
    let d = h3 / 3 / heads;
    qkv.broadcast_add(bias)?
        .reshape((b, l, 3, heads, d))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()
}

struct SplitQkv {
    b: usize,
    l: usize,
    heads: usize,
}

impl CustomOp2 for SplitQkv {
    fn name(&self) -> &'static str {
        "split-qkv"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        bias: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, bias) = (f32s(x, lx, op)?, f32s(bias, lb, op)?);
        let (b, l, heads) = (self.b, self.l, self.heads);
        let h3 = bias.len();
        if h3 % (3 * heads) != 0 || x.len() != b * l * h3 {
            candle_core::bail!(
                "{op}: [{}] input, [{h3}] bias, b={b} l={l} heads={heads}",
                x.len()
            );
        }
        let d = h3 / 3 / heads;
        let mut out = vec![0f32; x.len()];
        // One task per (part, batch row, head): writes an `[l, d]` block.
        out.par_chunks_mut(l * d)
            .enumerate()
            .for_each(|(block, dst)| {
                let part = block / (b * heads);
                let bi = (block / heads) % b;
                let hi = block % heads;
                let col = part * heads * d + hi * d;
                for t in 0..l {
                    let src = &x[(bi * l + t) * h3 + col..][..d];
                    let bs = &bias[col..col + d];
                    for ((o, s), bb) in dst[t * d..(t + 1) * d].iter_mut().zip(src).zip(bs) {
                        *o = s + bb;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((3, b, heads, l, d))))
    }
}

// ---------------------------------------------------------------------------------------

/// `scores`: `[b, heads, lq, lk]`; row `i` of batch `bi` is `softmax(scale · scores)` over
/// its first `lens[bi]` keys, 0 for the rest (right padding).
pub fn masked_softmax(scores: &Tensor, lens: &[usize], scale: f32) -> Result<Tensor> {
    if cpu_f32(&[scores]) {
        scores.contiguous()?.apply_op1_no_bwd(&MaskedSoftmax {
            lens: lens.to_vec(),
            scale,
        })
    } else {
        masked_softmax_reference(scores, lens, scale)
    }
}

pub fn masked_softmax_reference(scores: &Tensor, lens: &[usize], scale: f32) -> Result<Tensor> {
    let (b, _, _, lk) = scores.dims4()?;
    let mut mask = Vec::with_capacity(b * lk);
    for &n in lens {
        mask.extend((0..lk).map(|j| if j < n { 0f32 } else { f32::NEG_INFINITY }));
    }
    let mask = Tensor::from_vec(mask, (b, 1, 1, lk), scores.device())?.to_dtype(scores.dtype())?;
    let x = (scores * scale as f64)?.broadcast_add(&mask)?;
    let max = x.max_keepdim(3)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(3)?)
}

struct MaskedSoftmax {
    lens: Vec<usize>,
    scale: f32,
}

impl CustomOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let x = f32s(s, l, op)?;
        let &[b, heads, lq, lk] = l.dims() else {
            candle_core::bail!(
                "{op}: scores must be [b, heads, lq, lk], got {:?}",
                l.dims()
            );
        };
        if self.lens.len() != b || self.lens.iter().any(|&n| n == 0 || n > lk) {
            candle_core::bail!("{op}: lengths {:?} for {b} rows of {lk} keys", self.lens);
        }
        let mut out = vec![0f32; x.len()];
        let scale = self.scale;
        out.par_chunks_mut(lq * lk)
            .zip(x.par_chunks(lq * lk))
            .enumerate()
            .for_each(|(bh, (o, x))| {
                let n = self.lens[bh / heads];
                for (o, x) in o.chunks_exact_mut(lk).zip(x.chunks_exact(lk)) {
                    let max = x[..n].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                    let mut sum = 0f32;
                    for (o, &v) in o[..n].iter_mut().zip(&x[..n]) {
                        let e = ((v - max) * scale).exp();
                        *o = e;
                        sum += e;
                    }
                    let inv = 1.0 / sum;
                    o[..n].iter_mut().for_each(|v| *v *= inv);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------

/// `LayerNorm(x + bias + residual)` over the last dim: `x`, `residual` `[rows, h]`; `bias`
/// and the norm's `gamma`/`beta` `[h]`.
pub fn bias_residual_layer_norm(
    x: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    if cpu_f32(&[x, bias, residual, gamma, beta]) {
        let params = Tensor::stack(&[bias, gamma, beta], 0)?;
        x.contiguous()?.apply_op3_no_bwd(
            &residual.contiguous()?,
            &params,
            &BiasResidualNorm { eps },
        )
    } else {
        bias_residual_layer_norm_reference(x, bias, residual, gamma, beta, eps)
    }
}

pub fn bias_residual_layer_norm_reference(
    x: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let v = (x.broadcast_add(bias)? + residual)?;
    let mean = v.mean_keepdim(1)?;
    let c = v.broadcast_sub(&mean)?;
    let var = c.sqr()?.mean_keepdim(1)?;
    c.broadcast_div(&(var + eps as f64)?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}

struct BiasResidualNorm {
    eps: f32,
}

impl CustomOp3 for BiasResidualNorm {
    fn name(&self) -> &'static str {
        "bias-residual-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        r: &CpuStorage,
        lr: &Layout,
        p: &CpuStorage,
        lp: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let (x, r, p) = (f32s(x, lx, op)?, f32s(r, lr, op)?, f32s(p, lp, op)?);
        let h = match lx.dims() {
            &[_, h] if p.len() == 3 * h && r.len() == x.len() => h,
            d => candle_core::bail!(
                "{op}: x {d:?}, residual {:?}, params {:?}",
                lr.dims(),
                lp.dims()
            ),
        };
        let (bias, rest) = p.split_at(h);
        let (gamma, beta) = rest.split_at(h);
        let mut out = vec![0f32; x.len()];
        let eps = self.eps;
        let rows_per_task = (8192 / h).max(1);
        out.par_chunks_mut(rows_per_task * h)
            .zip(
                x.par_chunks(rows_per_task * h)
                    .zip(r.par_chunks(rows_per_task * h)),
            )
            .for_each(|(o, (x, r))| {
                for ((o, x), r) in o
                    .chunks_exact_mut(h)
                    .zip(x.chunks_exact(h))
                    .zip(r.chunks_exact(h))
                {
                    let mut sum = 0f32;
                    for ((o, x), (r, b)) in o.iter_mut().zip(x).zip(r.iter().zip(bias)) {
                        *o = x + b + r;
                        sum += *o;
                    }
                    let mean = sum / h as f32;
                    let var = o.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                    let inv = 1.0 / (var + eps).sqrt();
                    for ((o, g), b) in o.iter_mut().zip(gamma).zip(beta) {
                        *o = (*o - mean) * inv * g + b;
                    }
                }
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn split_qkv_matches_the_reference() {
        let (b, l, heads, d) = (3, 5, 4, 8);
        let qkv = randn(&[b * l, 3 * heads * d]);
        let bias = randn(&[3 * heads * d]);
        let got = split_qkv(&qkv, &bias, b, l, heads).unwrap();
        let want = split_qkv_reference(&qkv, &bias, b, l, heads).unwrap();
        assert_eq!(got.dims(), &[3, b, heads, l, d]);
        assert_eq!(max_diff(&got, &want), 0.0);
    }

    #[test]
    fn masked_softmax_ignores_padding_and_matches_the_reference() {
        let scores = randn(&[3, 2, 6, 6]);
        let lens = [6, 2, 4];
        let got = masked_softmax(&scores, &lens, 0.35).unwrap();
        let want = masked_softmax_reference(&scores, &lens, 0.35).unwrap();
        assert!(max_diff(&got, &want) < 1e-6);
        let row: Vec<f32> = got
            .get(1)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(&row[2..], &[0.0; 4]);
        assert!((row[0] + row[1] - 1.0).abs() < 1e-6);
        assert!(masked_softmax(&scores, &[6, 0, 4], 1.0).is_err());
    }

    #[test]
    fn bias_residual_layer_norm_matches_the_reference() {
        let (rows, h) = (37, 48);
        let (x, r) = (randn(&[rows, h]), randn(&[rows, h]));
        let (bias, g, b) = (randn(&[h]), randn(&[h]), randn(&[h]));
        let got = bias_residual_layer_norm(&x, &bias, &r, &g, &b, 1e-12).unwrap();
        let want = bias_residual_layer_norm_reference(&x, &bias, &r, &g, &b, 1e-12).unwrap();
        assert!(max_diff(&got, &want) < 2e-5, "{}", max_diff(&got, &want));
    }
}
