//! FP8 (E4M3) weights and the W8A8 matmul's CPU reference.
//!
//! In memory a layer keeps its `[N, K]` E4M3 weight (one byte a value) and f32 scales: one
//! per output row (per-tensor scales are expanded to rows at load, so the blocks of a fused
//! projection join exactly) or one per `[br, bc]` block. `W[n, k] = w8[n, k] · s(n, k)`.
//!
//! The matmul is what an FP8 GEMM computes: activations quantized to E4M3 (per token, from
//! the row's largest magnitude; per token and block width for block-scaled weights; or with
//! the checkpoint's static scale), products of the two E4M3 operands accumulated in f32,
//! then scaled by the activation scale. Here the operands are widened to f32 (exactly: every
//! E4M3 value is an f32) a bounded slice of rows at a time, so the dense weight never exists
//! whole.

use super::fp8_config::{Fp8Activations, Fp8Weights, label};
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};
use std::sync::LazyLock;

/// Largest finite E4M3 (`e4m3fn`: no infinities) magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// Smallest activation scale, as vLLM's: an all-zero row still divides by something finite.
const MIN_ACTIVATION_SCALE: f32 = 1.0 / (E4M3_MAX * 512.0);

/// f32 weights widened per matmul slice: at most this many values (16 MiB).
const SLICE_VALUES: usize = 1 << 22;

/// Every E4M3 byte as f32 (NaN for 0x7f / 0xff).
static E4M3_TO_F32: LazyLock<[f32; 256]> =
    LazyLock::new(|| std::array::from_fn(|b| float8::F8E4M3::from_bits(b as u8).to_f32()));

#[derive(Debug, Clone)]
pub struct Fp8Weight {
    /// Outputs.
    pub n: usize,
    /// Inputs.
    pub k: usize,
    /// `[N, K]` E4M3.
    pub weight: Tensor,
    /// f32: `[N]` per output row, or `[ceil(N/br), ceil(K/bc)]` per block.
    pub scales: Tensor,
    /// `(br, bc)` for block scales.
    pub block: Option<(usize, usize)>,
    pub activations: Fp8Activations,
    /// The static activation scale ([`Fp8Activations::Static`]).
    pub input_scale: Option<f32>,
    /// The scheme as the checkpoint declared it (its label is the layer's quantized type).
    pub declared: Fp8Weights,
}

impl Fp8Weight {
    /// Quantizes a dense `[N, K]` weight at load: a scale per output row, `max|W[n, :]| / 448`.
    pub fn quantize(w: &Tensor, activations: Fp8Activations) -> Result<Self> {
        let (n, k) = w.dims2()?;
        let w = w.to_dtype(DType::F32)?;
        let scales = row_amax_over_e4m3_max(&w)?.clamp(f32::MIN_POSITIVE, f32::MAX)?;
        let q = w
            .broadcast_div(&scales)?
            .clamp(-E4M3_MAX, E4M3_MAX)?
            .to_dtype(DType::F8E4M3)?;
        Ok(Self {
            n,
            k,
            weight: q,
            scales: scales.flatten_all()?,
            block: None,
            activations,
            input_scale: None,
            declared: Fp8Weights::Channel,
        })
    }

    /// A checkpoint's layer `name`: `weight` `[N, K]` E4M3 and its `scale` (any float dtype:
    /// one value, `[N]` / `[N, 1]`, or `[ceil(N/br), ceil(K/bc)]` when `declared` is a block
    /// scheme), with the static `input_scale` when activations are static.
    pub fn from_checkpoint(
        name: &str,
        weight: Tensor,
        scale: Tensor,
        input_scale: Option<Tensor>,
        declared: Fp8Weights,
        activations: Fp8Activations,
    ) -> Result<Self> {
        let err = |reason: String| ModelError::Weight {
            name: name.to_string(),
            reason,
        };
        let (n, k) = weight.dims2()?;
        let scale = scale.to_dtype(DType::F32)?;
        let (scales, block) = match (declared, scale.dims()) {
            (Fp8Weights::Block { rows, cols }, [bn, bk])
                if *bn == n.div_ceil(rows) && *bk == k.div_ceil(cols) =>
            {
                (scale.clone(), Some((rows, cols)))
            }
            (Fp8Weights::Block { rows, cols }, dims) => {
                return Err(err(format!(
                    "weight scale of shape {dims:?}, expected [{}, {}] for {rows}x{cols} blocks of [{n}, {k}]",
                    n.div_ceil(rows),
                    k.div_ceil(cols)
                )));
            }
            (_, _) if scale.elem_count() == 1 => {
                (scale.flatten_all()?.broadcast_as(n)?.contiguous()?, None)
            }
            (_, [rows] | [rows, 1]) if *rows == n => (scale.flatten_all()?, None),
            (_, dims) => {
                return Err(err(format!(
                    "weight scale of shape {dims:?}, expected one value or [{n}] / [{n}, 1]"
                )));
            }
        };
        let input_scale = match (activations, input_scale) {
            (Fp8Activations::Static, Some(s)) if s.elem_count() == 1 => {
                let s = s.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?[0];
                if !(s.is_finite() && s > 0.0) {
                    return Err(err(format!("input_scale {s} is not a positive number")));
                }
                Some(s)
            }
            (Fp8Activations::Static, Some(s)) => {
                return Err(err(format!(
                    "input_scale of shape {:?}, expected one value (static per tensor)",
                    s.dims()
                )));
            }
            (Fp8Activations::Static, None) => {
                return Err(err(
                    "static activation scheme but no input_scale in the checkpoint".into(),
                ));
            }
            (_, _) => None,
        };
        Ok(Self {
            n,
            k,
            weight,
            scales,
            block,
            activations,
            input_scale,
            declared,
        })
    }

    /// The layer's quantized type, e.g. `fp8-w8a8-channel`.
    pub fn label(&self) -> String {
        label(self.declared, self.activations)
    }

    /// Bytes the weight and its scales take in memory.
    pub fn bytes(&self) -> usize {
        crate::linear::tensor_bytes(&self.weight) + crate::linear::tensor_bytes(&self.scales)
    }

    /// Rows `start..start + len` of the dense weight, `[len, K]` f32 on the weight's device.
    fn dequantize_rows(&self, start: usize, len: usize) -> Result<Tensor> {
        let w = self.weight.narrow(0, start, len)?;
        let w = if w.device().is_cpu() {
            let lut = &*E4M3_TO_F32;
            let bytes: Vec<f32> = w
                .flatten_all()?
                .to_vec1::<float8::F8E4M3>()?
                .into_iter()
                .map(|v| lut[v.to_bits() as usize])
                .collect();
            Tensor::from_vec(bytes, (len, self.k), &Device::Cpu)?
        } else {
            w.to_dtype(DType::F32)?
        };
        Ok(match self.block {
            None => w.broadcast_mul(&self.scales.narrow(0, start, len)?.unsqueeze(1)?)?,
            Some((br, bc)) => {
                // The block rows this slice touches, each scale repeated over its block.
                let (b0, b1) = (start / br, (start + len).div_ceil(br));
                let bk = self.scales.dims()[1];
                let s = self
                    .scales
                    .narrow(0, b0, b1 - b0)?
                    .unsqueeze(1)?
                    .unsqueeze(3)?
                    .broadcast_as((b1 - b0, br, bk, bc))?
                    .reshape(((b1 - b0) * br, bk * bc))?
                    .narrow(0, start - b0 * br, len)?
                    .narrow(1, 0, self.k)?;
                (w * s)?
            }
        })
    }

    /// The dense `[N, K]` weight as a tensor of `dtype`.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        Ok(self.dequantize_rows(0, self.n)?.to_dtype(dtype)?)
    }

    /// `x · Wᵀ` (no bias) as an FP8 GEMM computes it; returned in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let lead = x.dims()[..x.rank().saturating_sub(1)].to_vec();
        let x2 = x.to_dtype(DType::F32)?.reshape(((), self.k))?;
        let (xq, x_scale) = match self.activations {
            Fp8Activations::DynamicPerToken => match self.block {
                Some((_, bc)) => (quantize_per_token_group(&x2, bc)?, None),
                None => {
                    let (q, s) = quantize_per_token(&x2)?;
                    (q, Some(s))
                }
            },
            Fp8Activations::Static => {
                let s = self.input_scale.unwrap_or(1.0);
                (quantize_with_scale(&x2, s)?, None)
            }
            Fp8Activations::None => (x2, None),
        };
        let rows = (SLICE_VALUES / self.k.max(1)).clamp(1, self.n.max(1));
        let rows = match self.block {
            Some((br, _)) => rows.div_ceil(br) * br,
            None => rows,
        };
        let mut outs = Vec::with_capacity(self.n.div_ceil(rows));
        let mut start = 0;
        while start < self.n {
            let len = rows.min(self.n - start);
            let w = self.dequantize_rows(start, len)?;
            outs.push(xq.matmul(&w.t()?)?);
            start += len;
        }
        let y = Tensor::cat(&outs, 1)?;
        let y = match (x_scale, self.activations) {
            (Some(s), _) => y.broadcast_mul(&s)?,
            (None, Fp8Activations::Static) => (y * f64::from(self.input_scale.unwrap_or(1.0)))?,
            (None, _) => y,
        };
        let mut shape = lead;
        shape.push(self.n);
        Ok(y.reshape(shape)?.to_dtype(x.dtype())?)
    }

    /// Row blocks of one fused projection as one weight, when they share inputs, scheme and
    /// (for block scales) every block but the last ends on a block boundary. Static input
    /// scales are joined as their maximum, as vLLM does: one activation scale for the fused
    /// input, and none of the parts' inputs can overflow it.
    pub fn join(parts: &[Fp8Weight]) -> Result<Option<Fp8Weight>> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        for (i, p) in parts.iter().enumerate() {
            let same = p.k == first.k
                && p.block == first.block
                && p.activations == first.activations
                && p.declared == first.declared;
            let aligned = match p.block {
                Some((br, _)) => i + 1 == parts.len() || p.n % br == 0,
                None => true,
            };
            if !(same && aligned) {
                return Ok(None);
            }
        }
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight).collect();
        let scales: Vec<&Tensor> = parts.iter().map(|p| &p.scales).collect();
        let input_scale = parts.iter().filter_map(|p| p.input_scale).reduce(f32::max);
        Ok(Some(Fp8Weight {
            n: parts.iter().map(|p| p.n).sum(),
            k: first.k,
            weight: Tensor::cat(&weights, 0)?,
            scales: Tensor::cat(&scales, 0)?,
            block: first.block,
            activations: first.activations,
            input_scale,
            declared: first.declared,
        }))
    }
}

/// Per-token quantization of `[M, K]` f32 rows: `(q, s)` with `q` the E4M3 values (held in
/// f32) and `s` `[M, 1]` the scales, `s = max(max|x_m| / 448, 1 / (448 · 512))`, `q =
/// e4m3(x · (1 / s))`: vLLM's arithmetic, to the bit.
pub fn quantize_per_token(x: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = row_amax_over_e4m3_max(x)?.clamp(MIN_ACTIVATION_SCALE, f32::MAX)?;
    let q = x
        .broadcast_mul(&s.recip()?)?
        .clamp(-E4M3_MAX, E4M3_MAX)?
        .to_dtype(DType::F8E4M3)?
        .to_dtype(DType::F32)?;
    Ok((q, s))
}

/// Per-token-group quantization, as block-scaled checkpoints (DeepSeek-V3, vLLM's block FP8)
/// quantize activations: a scale per token and per `group` inputs (the weight's block
/// width), so one outlier spoils only its own group. Returns the quantized values already
/// multiplied back by their scales (f32), which is what the block GEMM's per-(token, block)
/// rescaling of partial sums adds up to. The last group may be narrower.
pub fn quantize_per_token_group(x: &Tensor, group: usize) -> Result<Tensor> {
    let k = x.dim(1)?;
    let group = group.max(1);
    let mut parts = Vec::with_capacity(k.div_ceil(group));
    let mut start = 0;
    while start < k {
        let len = group.min(k - start);
        let (q, s) = quantize_per_token(&x.narrow(1, start, len)?.contiguous()?)?;
        parts.push(q.broadcast_mul(&s)?);
        start += len;
    }
    Ok(Tensor::cat(&parts, 1)?)
}

/// `x · (1 / s)` rounded to E4M3 (saturating at ±448), held in f32.
pub fn quantize_with_scale(x: &Tensor, s: f32) -> Result<Tensor> {
    Ok((x * f64::from(1.0 / s))?
        .clamp(-E4M3_MAX, E4M3_MAX)?
        .to_dtype(DType::F8E4M3)?
        .to_dtype(DType::F32)?)
}

/// `max|x[r, :]| / 448` for each row, `[rows, 1]`, divided (not multiplied by 1/448).
fn row_amax_over_e4m3_max(x: &Tensor) -> Result<Tensor> {
    let max = Tensor::new(&[E4M3_MAX], x.device())?;
    Ok(x.abs()?.max_keepdim(1)?.broadcast_div(&max)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int4::tests::lcg;

    /// E4M3FN decoded from its definition (sign, 4-bit exponent biased by 7, 3-bit
    /// mantissa, subnormals at exponent 0, NaN at S.1111.111), not through the float8 crate.
    fn decode(b: u8) -> f32 {
        let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
        let (e, m) = (i32::from((b >> 3) & 0xf), f32::from(b & 7));
        if e == 15 && m == 7.0 {
            return f32::NAN;
        }
        sign * if e == 0 {
            m / 8.0 * 2f32.powi(-6)
        } else {
            (1.0 + m / 8.0) * 2f32.powi(e - 7)
        }
    }

    /// Round to nearest E4M3 by search (ties to the even mantissa), saturating at ±448.
    fn round_e4m3(v: f32) -> f32 {
        let mut best = (f32::INFINITY, 0f32, 0u8);
        for b in 0..=255u8 {
            let d = decode(b);
            if d.is_nan() {
                continue;
            }
            let dist = (d - v).abs();
            if dist < best.0 || (dist == best.0 && b & 1 == 0 && best.2 & 1 == 1) {
                best = (dist, d, b);
            }
        }
        best.1
    }

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut st = seed;
        (0..n)
            .map(|_| (lcg(&mut st) as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    fn rel_l2(a: &[f32], b: &[f32]) -> f32 {
        let d: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        let n: f32 = b.iter().map(|y| y * y).sum();
        (d / n).sqrt()
    }

    #[test]
    fn the_lookup_table_and_rounding_match_the_e4m3_definition() {
        for b in 0..=255u8 {
            let (got, want) = (E4M3_TO_F32[b as usize], decode(b));
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "{b:#x}: {got} vs {want}"
            );
        }
        assert_eq!(decode(0x7e), E4M3_MAX);
        let xs = random(4000, 3, 600.0);
        let t = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu).unwrap();
        let got = quantize_with_scale(&t, 1.0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, g) in xs.iter().zip(&got) {
            assert_eq!(*g, round_e4m3(*x), "{x}");
        }
    }

    #[test]
    fn per_token_quantization_scales_each_row_to_the_e4m3_range() {
        let (m, k) = (5, 37);
        let mut xs = random(m * k, 7, 3.0);
        xs[2 * k..3 * k].iter_mut().for_each(|v| *v = 0.0); // an all-zero token
        let x = Tensor::from_vec(xs.clone(), (m, k), &Device::Cpu).unwrap();
        let (q, s) = quantize_per_token(&x).unwrap();
        let (q, s) = (
            q.to_vec2::<f32>().unwrap(),
            s.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        for r in 0..m {
            let row = &xs[r * k..][..k];
            let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
            let want_s = (amax / E4M3_MAX).max(MIN_ACTIVATION_SCALE);
            assert_eq!(s[r], want_s, "row {r}");
            for (c, v) in row.iter().enumerate() {
                assert_eq!(q[r][c], round_e4m3(v * (1.0 / want_s)), "row {r} col {c}");
            }
            if amax > 0.0 {
                assert!(q[r].iter().any(|v| v.abs() == E4M3_MAX), "row {r}");
            }
        }
    }

    /// The three weight schemes and three activation schemes against the matmul written out
    /// in f32 from the definition, on odd sizes (a partial block, a sliced matmul).
    #[test]
    fn forward_matches_a_direct_f32_computation() {
        let (m, n, k) = (3, 45, 70);
        let wbits: Vec<u8> = {
            let mut st = 11;
            (0..n * k)
                .map(|_| {
                    let b = (lcg(&mut st) & 0xff) as u8;
                    if b & 0x7f == 0x7f { b & 0xf0 } else { b } // no NaN
                })
                .collect()
        };
        let wf: Vec<f32> = wbits.iter().map(|&b| decode(b)).collect();
        let weight = Tensor::from_vec(wf.clone(), (n, k), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F8E4M3)
            .unwrap();
        let xs = random(m * k, 5, 2.0);
        let x = Tensor::from_vec(xs.clone(), (m, k), &Device::Cpu).unwrap();
        let (br, bc) = (16, 32);
        let block_scales = random(n.div_ceil(br) * k.div_ceil(bc), 9, 0.01)
            .into_iter()
            .map(|v| v.abs() + 1e-3)
            .collect::<Vec<_>>();
        let channel_scales = random(n, 13, 0.01)
            .into_iter()
            .map(|v| v.abs() + 1e-3)
            .collect::<Vec<_>>();
        /// The declared scale layout, its tensor, and the scale of weight (row, col).
        type ScaleCase<'a> = (Fp8Weights, Tensor, Box<dyn Fn(usize, usize) -> f32 + 'a>);
        let cases: Vec<ScaleCase> = vec![
            (
                Fp8Weights::Tensor,
                Tensor::new(&[0.004f32], &Device::Cpu).unwrap(),
                Box::new(|_, _| 0.004),
            ),
            (
                Fp8Weights::Channel,
                Tensor::from_vec(channel_scales.clone(), (n, 1), &Device::Cpu).unwrap(),
                Box::new(|r, _| channel_scales[r]),
            ),
            (
                Fp8Weights::Block { rows: br, cols: bc },
                Tensor::from_vec(
                    block_scales.clone(),
                    (n.div_ceil(br), k.div_ceil(bc)),
                    &Device::Cpu,
                )
                .unwrap(),
                Box::new(|r, c| block_scales[(r / br) * k.div_ceil(bc) + c / bc]),
            ),
        ];
        let static_scale = 0.01f32;
        for (declared, scale, s_of) in &cases {
            for acts in [
                Fp8Activations::DynamicPerToken,
                Fp8Activations::Static,
                Fp8Activations::None,
            ] {
                let input = (acts == Fp8Activations::Static)
                    .then(|| Tensor::new(&[static_scale], &Device::Cpu).unwrap());
                let l = Fp8Weight::from_checkpoint(
                    "t",
                    weight.clone(),
                    scale.clone(),
                    input,
                    *declared,
                    acts,
                )
                .unwrap();
                let got = l
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let mut want = vec![0f32; m * n];
                // Dynamic activations of a block-scaled layer get a scale per `bc` inputs.
                let group = match declared {
                    Fp8Weights::Block { cols, .. } => *cols,
                    _ => k,
                };
                for r in 0..m {
                    let row = &xs[r * k..][..k];
                    let sx = |c: usize| match acts {
                        Fp8Activations::DynamicPerToken => {
                            let g = &row[c / group * group..((c / group + 1) * group).min(k)];
                            let amax = g.iter().fold(0f32, |a, v| a.max(v.abs()));
                            (amax / E4M3_MAX).max(MIN_ACTIVATION_SCALE)
                        }
                        Fp8Activations::Static => static_scale,
                        Fp8Activations::None => 1.0,
                    };
                    for o in 0..n {
                        let mut acc = 0f64;
                        for c in 0..k {
                            let xq = match acts {
                                Fp8Activations::None => row[c],
                                _ => round_e4m3(row[c] * (1.0 / sx(c))),
                            };
                            acc += f64::from(xq)
                                * f64::from(sx(c))
                                * f64::from(wf[o * k + c] * s_of(o, c));
                        }
                        want[r * n + o] = acc as f32;
                    }
                }
                let e = rel_l2(&got, &want);
                assert!(e < 1e-5, "{declared:?} {acts:?}: rel L2 {e}");
            }
        }
    }

    #[test]
    fn quantize_at_load_round_trips_within_e4m3_precision_and_joins() {
        let (n, k) = (24, 40);
        let w = Tensor::from_vec(random(n * k, 21, 0.05), (n, k), &Device::Cpu).unwrap();
        let q = Fp8Weight::quantize(&w, Fp8Activations::DynamicPerToken).unwrap();
        let back = q.dequantize(DType::F32).unwrap();
        let (w1, b1) = (
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        // 3 mantissa bits: relative error at most 2^-4 per value in the normal range.
        let e = rel_l2(&b1, &w1);
        assert!(e < 0.04, "{e}");
        assert_eq!(q.bytes(), n * k + 4 * n);
        // Quantizing the dequantized weight gives the same bytes back.
        let again = Fp8Weight::quantize(&back, Fp8Activations::DynamicPerToken).unwrap();
        let bits = |t: &Tensor| -> Vec<u8> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<float8::F8E4M3>()
                .unwrap()
                .into_iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&again.weight), bits(&q.weight));
        // Two halves joined compute what the whole does.
        let (top, bottom) = (
            Fp8Weight::quantize(&w.narrow(0, 0, 8).unwrap(), Fp8Activations::DynamicPerToken)
                .unwrap(),
            Fp8Weight::quantize(
                &w.narrow(0, 8, 16).unwrap(),
                Fp8Activations::DynamicPerToken,
            )
            .unwrap(),
        );
        let joined = Fp8Weight::join(&[top, bottom]).unwrap().unwrap();
        let x = Tensor::from_vec(random(2 * k, 4, 1.0), (2, k), &Device::Cpu).unwrap();
        let (a, b) = (
            joined
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            q.forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn bad_scale_shapes_are_errors_naming_the_layer() {
        let w = Tensor::zeros((8, 16), DType::F8E4M3, &Device::Cpu).unwrap();
        let bad = Tensor::zeros((3, 2), DType::F32, &Device::Cpu).unwrap();
        let m = Fp8Weight::from_checkpoint(
            "model.layers.0.self_attn.q_proj",
            w.clone(),
            bad.clone(),
            None,
            Fp8Weights::Channel,
            Fp8Activations::DynamicPerToken,
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("q_proj") && m.contains("[3, 2]"), "{m}");
        let m = Fp8Weight::from_checkpoint(
            "l",
            w.clone(),
            bad,
            None,
            Fp8Weights::Block { rows: 4, cols: 4 },
            Fp8Activations::DynamicPerToken,
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("expected [2, 4]"), "{m}");
        let one = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let m = Fp8Weight::from_checkpoint(
            "l",
            w,
            one,
            None,
            Fp8Weights::Tensor,
            Fp8Activations::Static,
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("input_scale"), "{m}");
    }
}
