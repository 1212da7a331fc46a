//! The one linear layer and the one embedding every architecture calls, whatever the weights'
//! format: dense (f32/f16/bf16) or quantized (GGUF block types, through candle's quantized
//! matmul), int4 (GPTQ, AWQ) or FP8. Model files never branch on a format; a new format is a
//! new variant here.

use crate::Result;
use crate::quant::{Fp8Weight, Int4Weight};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use indus_kernels::amx::{self, split_bf16::SplitBf16Matmul, split_bf16::SplitBf16Weight};
use std::collections::BTreeSet;
use std::sync::Arc;

/// `y = x · Wᵀ + b` for a `[rows, cols]` weight.
#[derive(Debug, Clone)]
pub enum Linear {
    Dense(candle_nn::Linear),
    /// Weights stay in their block format; candle quantizes the activations as its kernels
    /// need (Q8 blocks on the CPU) and computes in f32.
    Quantized {
        weight: Arc<QTensor>,
        matmul: QMatMul,
        bias: Option<Tensor>,
    },
    /// Int4 weight-only (GPTQ / AWQ, W4A16): packed weights kept in memory; the CPU path
    /// dequantizes them and multiplies in f32.
    Int4 {
        weight: Arc<Int4Weight>,
        bias: Option<Tensor>,
    },
    /// FP8 (E4M3) weights with f32 scales; activations quantized as the checkpoint says
    /// (W8A8 per token or static, or W8A16). The CPU path widens slices of the weight to f32.
    Fp8 {
        weight: Arc<Fp8Weight>,
        bias: Option<Tensor>,
    },
    /// Row blocks of one fused projection that could not be joined into one weight (parts of
    /// different quantized types): each runs on its own and the outputs are joined.
    Concat(Vec<Linear>),
    /// A dense f32 weight on a CPU with AMX, split into two bf16 parts at load and multiplied
    /// on AMX tiles (`indus_kernels::amx::split_bf16`): within ~1e-5 of f32, the same bytes,
    /// about twice candle's f32 GEMM at an encoder batch. Chosen with [`Linear::on_amx`].
    SplitBf16 {
        matmul: SplitBf16Matmul,
        bias: Option<Tensor>,
    },
}

impl Linear {
    pub fn dense(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::Dense(candle_nn::Linear::new(weight, bias))
    }

    pub fn quantized(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self::Quantized {
            matmul: QMatMul::from_arc(weight.clone())?,
            weight,
            bias,
        })
    }

    /// The same layer on AMX tiles when it is a dense f32 weight on the CPU and this process
    /// has AMX (`INDUS_AMX=off` opts out); otherwise unchanged. Opt-in per model, since the
    /// results move by ~1e-5 relative: the encoders take it, the decoders (whose goldens are
    /// logits within 1e-5) do not.
    pub fn on_amx(self) -> Result<Self> {
        let Self::Dense(l) = &self else {
            return Ok(self);
        };
        let w = l.weight();
        if !w.device().is_cpu() || w.dtype() != DType::F32 || w.rank() != 2 || !amx::available() {
            return Ok(self);
        }
        let (n, k) = w.dims2()?;
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        let weight = SplitBf16Weight::pack(&values, n, k).map_err(candle_core::Error::Msg)?;
        Ok(Self::SplitBf16 {
            matmul: SplitBf16Matmul(Arc::new(weight)),
            bias: l.bias().cloned(),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::SplitBf16 { matmul, bias } => {
                let y = x
                    .to_dtype(DType::F32)?
                    .contiguous()?
                    .apply_op1_no_bwd(matmul)?
                    .to_dtype(x.dtype())?;
                with_bias(y, bias.as_ref())
            }
            Self::Dense(l) => Ok(l.forward(x)?),
            Self::Quantized {
                weight,
                matmul,
                bias,
            } => {
                let dtype = x.dtype();
                let x = x.to_dtype(DType::F32)?;
                let y = match block_matmul_on_cpu(weight, &x)? {
                    Some(y) => y,
                    None => matmul.forward(&x)?,
                };
                let y = match bias {
                    Some(b) => y.broadcast_add(&b.to_dtype(DType::F32)?)?,
                    None => y,
                };
                Ok(y.to_dtype(dtype)?)
            }
            Self::Int4 { weight, bias } => with_bias(weight.forward(x)?, bias.as_ref()),
            Self::Fp8 { weight, bias } => with_bias(weight.forward(x)?, bias.as_ref()),
            Self::Concat(parts) => {
                let outs = parts
                    .iter()
                    .map(|p| p.forward(x))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&outs, candle_core::D::Minus1)?)
            }
        }
    }

    /// Bytes the weights (and biases) take in memory.
    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Dense(l) => tensor_bytes(l.weight()) + l.bias().map(tensor_bytes).unwrap_or(0),
            Self::Quantized { weight, bias, .. } => {
                weight.storage_size_in_bytes() + bias.as_ref().map(tensor_bytes).unwrap_or(0)
            }
            Self::Int4 { weight, bias } => {
                weight.bytes() + bias.as_ref().map(tensor_bytes).unwrap_or(0)
            }
            Self::Fp8 { weight, bias } => {
                weight.bytes() + bias.as_ref().map(tensor_bytes).unwrap_or(0)
            }
            Self::Concat(parts) => parts.iter().map(Linear::weight_bytes).sum(),
            Self::SplitBf16 { matmul, bias } => {
                matmul.0.bytes() + bias.as_ref().map(tensor_bytes).unwrap_or(0)
            }
        }
    }

    /// The block types this layer keeps (empty for dense).
    pub fn quantized_types(&self, out: &mut BTreeSet<String>) {
        match self {
            Self::Dense(_) | Self::SplitBf16 { .. } => {}
            Self::Quantized { weight, .. } => {
                out.insert(type_name(weight.dtype()));
            }
            Self::Int4 { weight, .. } => {
                out.insert(weight.label());
            }
            Self::Fp8 { weight, .. } => {
                out.insert(weight.label());
            }
            Self::Concat(parts) => parts.iter().for_each(|p| p.quantized_types(out)),
        }
    }
}

fn with_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    Ok(match bias {
        Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
        None => y,
    })
}

/// The bias of a projection fused from row blocks: each block's bias (`get(name, [rows])`),
/// joined in block order; `None` when the blocks have none.
pub(crate) fn fused_bias(
    names: Option<&[String]>,
    rows: &[usize],
    get: impl Fn(&str, &[usize]) -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    let Some(names) = names else {
        return Ok(None);
    };
    let parts = names
        .iter()
        .zip(rows)
        .map(|(n, &r)| get(n, &[r]))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Tensor::cat(&parts, 0)?))
}

/// A fused bias cut back into each row block's share, for blocks that run on their own
/// ([`Linear::Concat`]).
pub(crate) fn split_bias(bias: Option<&Tensor>, rows: &[usize]) -> Result<Vec<Option<Tensor>>> {
    let mut offset = 0;
    rows.iter()
        .map(|&r| {
            let part = bias.map(|b| b.narrow(0, offset, r)).transpose()?;
            offset += r;
            Ok(part)
        })
        .collect()
}

/// llama.cpp's name of a block type (`Q4_K`, not candle's `Q4K`).
pub fn type_name(t: GgmlDType) -> String {
    let s = format!("{t:?}");
    match s.strip_suffix('K') {
        Some(base) if base.starts_with('Q') => format!("{base}_K"),
        _ => s,
    }
}

/// Q4_1 and Q8_0 on the CPU through our AVX2 / AVX-512 kernels (candle's Q4_1 is scalar, its Q8_0 one
/// FMA chain per output); `None` when another path applies.
fn block_matmul_on_cpu(weight: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    use indus_kernels::block_matmul::{BlockType, block_matmul, simd_available};
    let block_type = match weight.dtype() {
        GgmlDType::Q4_1 => BlockType::Q4_1,
        GgmlDType::Q8_0 => BlockType::Q8_0,
        _ => return Ok(None),
    };
    let &[n, k] = weight.shape().dims() else {
        return Ok(None);
    };
    if !x.device().is_cpu() || x.rank() == 0 || !simd_available() {
        return Ok(None);
    }
    let lead = x.dims()[..x.rank() - 1].to_vec();
    let m: usize = lead.iter().product();
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let bytes = weight.data()?;
    let y = block_matmul(block_type, &xs, m, k, &bytes, n).map_err(candle_core::Error::Msg)?;
    let mut shape = lead;
    shape.push(n);
    Ok(Some(Tensor::from_vec(y, shape, x.device())?))
}

pub(crate) fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

/// Token embedding table `[vocab, hidden]`.
#[derive(Debug, Clone)]
pub enum Embedding {
    Dense(Tensor),
    /// Looked-up rows are gathered and dequantized one by one (candle's `QTensor::embedding`),
    /// so a 128k-row table never exists densely.
    Quantized {
        table: Arc<QTensor>,
        dtype: DType,
    },
}

impl Embedding {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.index_select(ids, 0)?),
            Self::Quantized { table, dtype } => Ok(table.embedding(ids)?.to_dtype(*dtype)?),
        }
    }

    /// The same weights as an output projection (tied embeddings).
    pub fn as_linear(&self) -> Result<Linear> {
        match self {
            Self::Dense(t) => Ok(Linear::dense(t.clone(), None)),
            Self::Quantized { table, .. } => Linear::quantized(table.clone(), None),
        }
    }

    pub fn weight_bytes(&self) -> usize {
        match self {
            Self::Dense(t) => tensor_bytes(t),
            Self::Quantized { table, .. } => table.storage_size_in_bytes(),
        }
    }

    pub fn quantized_types(&self, out: &mut BTreeSet<String>) {
        if let Self::Quantized { table, .. } = self {
            out.insert(type_name(table.dtype()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn weight(rows: usize, cols: usize, seed: u32) -> Tensor {
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) as f32 / 65536.0)
                    - 0.5
            })
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu).unwrap()
    }

    fn rel_l2(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let n = b
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        (d / n).sqrt()
    }

    #[test]
    fn quantized_matches_dense_within_q8_error_and_concat_joins_outputs() {
        let (w1, w2) = (weight(64, 64, 1), weight(32, 64, 2));
        let x = weight(5, 64, 3);
        let q1 = Arc::new(QTensor::quantize(&w1, GgmlDType::Q8_0).unwrap());
        let q2 = Arc::new(QTensor::quantize(&w2, GgmlDType::Q4_0).unwrap());
        let dense = Linear::dense(Tensor::cat(&[&w1, &w2], 0).unwrap(), None);
        let mixed = Linear::Concat(vec![
            Linear::quantized(q1, None).unwrap(),
            Linear::quantized(q2, None).unwrap(),
        ]);
        let (yd, yq) = (dense.forward(&x).unwrap(), mixed.forward(&x).unwrap());
        assert_eq!(yq.dims(), &[5, 96]);
        let err = rel_l2(&yq, &yd);
        assert!(err < 0.05, "{err}");
        let mut types = BTreeSet::new();
        mixed.quantized_types(&mut types);
        assert_eq!(types.len(), 2);
        assert!(mixed.weight_bytes() < dense.weight_bytes() / 3);
    }

    #[test]
    fn on_amx_computes_the_dense_layer_within_split_bf16_error() {
        // 64 × 96: whole tiles, so the packed weight takes the f32 weight's bytes exactly.
        let (w, b) = (weight(64, 96, 1), weight(1, 64, 2).flatten_all().unwrap());
        let dense = Linear::dense(w, Some(b));
        let amx = dense.clone().on_amx().unwrap();
        if !amx::available() {
            assert!(matches!(amx, Linear::Dense(_)), "unchanged without AMX");
            eprintln!("no AMX in this process: the split-bf16 layer is not checked here");
            return;
        }
        assert!(matches!(amx, Linear::SplitBf16 { .. }));
        assert_eq!(amx.weight_bytes(), dense.weight_bytes());
        let x = weight(5 * 3, 96, 3).reshape((5, 3, 96)).unwrap();
        let (want, got) = (dense.forward(&x).unwrap(), amx.forward(&x).unwrap());
        assert_eq!(got.dims(), &[5, 3, 64]);
        let err = (want - got).unwrap().abs().unwrap().max_all().unwrap();
        // Within 2⁻¹⁵ of Σ|x·w| (at most 96 · 0.5 · 0.5 = 24 here; the kernel's own test
        // checks the bound term by term).
        let err = err.to_scalar::<f32>().unwrap();
        assert!(err < 24.0 * 2f32.powi(-15), "{err}");
        // Quantized and non-f32 layers stay as they are.
        let half = Linear::dense(weight(4, 32, 4).to_dtype(DType::F16).unwrap(), None);
        assert!(matches!(half.on_amx().unwrap(), Linear::Dense(_)));
    }

    #[test]
    fn our_q4_1_and_q8_0_kernels_compute_what_candles_do() {
        // Same activation quantization, same integer sums: only float summation order differs.
        let x = weight(5, 576, 4);
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = Arc::new(QTensor::quantize(&weight(70, 576, 7), dtype).unwrap());
            let ours = Linear::quantized(q.clone(), None)
                .unwrap()
                .forward(&x)
                .unwrap();
            let candle = QMatMul::from_arc(q).unwrap().forward(&x).unwrap();
            let err = rel_l2(&ours, &candle);
            assert!(err < 1e-5, "{dtype:?}: {err}");
        }
    }

    #[test]
    fn quantized_embedding_gathers_dequantized_rows() {
        let w = weight(100, 64, 9);
        let q = Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap());
        let ids = Tensor::new(&[3u32, 97, 3], &Device::Cpu).unwrap();
        let e = Embedding::Quantized {
            table: q.clone(),
            dtype: DType::F32,
        };
        let got = e.forward(&ids).unwrap();
        let want = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .index_select(&ids, 0)
            .unwrap();
        assert_eq!(rel_l2(&got, &want), 0.0);
    }
}
