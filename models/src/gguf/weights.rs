//! GGUF tensors as the decoder asks for them: by our names, in our Q/K row layout, quantized
//! (kept in their block type) or dequantized to the model's dtype.

use super::arch::{LayerNames, QkLayout, gguf_name};
use super::reader::{GgufFile, TensorInfo};
use crate::linear::{Embedding, Linear, fused_bias, split_bias};
use crate::{ModelError, Result};
use candle_core::quantized::{GgmlDType, QTensor, ggml_file::qtensor_from_ggml};
use candle_core::{DType, Device, Tensor};
use std::sync::Arc;

/// A tensor of the file as a candle quantized tensor (dense types too: F32/F16/BF16 are
/// "quantized" with block size 1).
pub(crate) fn qtensor(
    file: &GgufFile,
    name: &str,
    info: &TensorInfo,
    device: &Device,
) -> Result<QTensor> {
    qtensor_from_raw(file, name, info, file.tensor_bytes(info), device)
}

fn qtensor_from_raw(
    file: &GgufFile,
    name: &str,
    info: &TensorInfo,
    raw: &[u8],
    device: &Device,
) -> Result<QTensor> {
    qtensor_from_ggml(info.dtype, raw, info.shape.clone(), device).map_err(|e| ModelError::Weight {
        name: format!("{} in {}", name, file.path().display()),
        reason: e.to_string(),
    })
}

/// Rows of llama.cpp's interleaved rotary layout back in Hugging Face's half-split order:
/// within each head, GGUF row `2i + j` is our row `j·(d/2) + i`.
pub fn unpermute_rows(raw: &[u8], row_bytes: usize, heads: usize) -> Vec<u8> {
    let rows = raw.len() / row_bytes;
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0u8; raw.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let src = h * d + 2 * i + j;
                let dst = h * d + j * half + i;
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&raw[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

/// The GGUF side of [`crate::weights::WeightSource`].
pub(crate) struct GgufWeights {
    pub file: Arc<GgufFile>,
    pub layout: QkLayout,
    /// The architecture's per-layer name table.
    pub layer_names: LayerNames,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub dtype: DType,
    pub device: Device,
    /// `--dequantize`: every weight dense in `dtype`.
    pub dequantize: bool,
}

impl GgufWeights {
    fn info(&self, ours: &str, shape: &[usize]) -> Result<(String, &TensorInfo)> {
        let name = gguf_name(self.layer_names, ours).ok_or_else(|| ModelError::Weight {
            name: ours.to_string(),
            reason: "has no GGUF name".into(),
        })?;
        let info = self
            .file
            .tensor_info(&name)
            .ok_or_else(|| ModelError::Weight {
                name: format!("{name} ({ours})"),
                reason: format!("missing from {}", self.file.path().display()),
            })?;
        // gguf-py may drop or keep unit axes (Qwen2-MoE's `[1, hidden]` shared-expert gate is
        // stored as `[hidden]` by some converters): the same values either way.
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if info.shape != shape && squeeze(&info.shape) != squeeze(shape) {
            return Err(ModelError::Weight {
                name: format!("{name} in {}", self.file.path().display()),
                reason: format!("shape {:?}, expected {shape:?}", info.shape),
            });
        }
        Ok((name, info))
    }

    pub fn contains(&self, ours: &str) -> bool {
        gguf_name(self.layer_names, ours).is_some_and(|n| self.file.tensor_info(&n).is_some())
    }

    /// Heads to un-permute for `ours` (Q and K weights and biases of interleaved files).
    fn permuted_heads(&self, ours: &str) -> Option<usize> {
        if self.layout != QkLayout::Interleaved {
            return None;
        }
        if ours.contains(".q_proj.") {
            Some(self.num_heads)
        } else if ours.contains(".k_proj.") {
            Some(self.num_kv_heads)
        } else {
            None
        }
    }

    /// The tensor in our layout and `shape`, as a quantized tensor on the model's device.
    fn load_q(&self, ours: &str, shape: &[usize]) -> Result<QTensor> {
        let (name, info) = self.info(ours, shape)?;
        if info.shape != shape {
            let reshaped = TensorInfo {
                shape: shape.to_vec(),
                ..info.clone()
            };
            return qtensor(&self.file, &name, &reshaped, &self.device);
        }
        match self.permuted_heads(ours) {
            Some(heads) => {
                let row_bytes = if shape.len() == 1 {
                    info.dtype.type_size()
                } else {
                    info.row_bytes()
                };
                let raw = unpermute_rows(self.file.tensor_bytes(info), row_bytes, heads);
                qtensor_from_raw(&self.file, &name, info, &raw, &self.device)
            }
            None => qtensor(&self.file, &name, info, &self.device),
        }
    }

    fn is_dense_type(t: GgmlDType) -> bool {
        matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
    }

    /// A dense tensor in the model's dtype (norms, biases, `--dequantize`).
    pub fn get(&self, ours: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self
            .load_q(ours, shape)?
            .dequantize(&self.device)?
            .to_dtype(self.dtype)?)
    }

    /// One projection made of row blocks `names` (`[rows_i, cols]` each): one quantized
    /// weight when the blocks share a block type, dense when they are dense types (or
    /// `--dequantize`), else the blocks side by side.
    pub fn linear(
        &self,
        names: &[String],
        rows: &[usize],
        cols: usize,
        biases: Option<&[String]>,
    ) -> Result<Linear> {
        let bias = fused_bias(biases, rows, |n, shape| self.get(n, shape))?;
        let parts = names
            .iter()
            .zip(rows)
            .map(|(n, &r)| self.load_q(n, &[r, cols]))
            .collect::<Result<Vec<_>>>()?;
        let all_dense = parts.iter().all(|p| Self::is_dense_type(p.dtype()));
        if self.dequantize || all_dense {
            let dense = parts
                .iter()
                .map(|p| Ok(p.dequantize(&self.device)?.to_dtype(self.dtype)?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Linear::dense(Tensor::cat(&dense, 0)?, bias));
        }
        if parts.len() == 1 {
            let p = parts.into_iter().next().ok_or_else(|| ModelError::Weight {
                name: names.join(", "),
                reason: "no parts".into(),
            })?;
            return Linear::quantized(Arc::new(p), bias);
        }
        let dtype = parts[0].dtype();
        if parts.iter().all(|p| p.dtype() == dtype) {
            // Blocks never straddle rows, so joining row blocks is joining their bytes.
            let mut raw = Vec::new();
            for p in &parts {
                raw.extend_from_slice(&p.data()?);
            }
            let total: usize = rows.iter().sum();
            let joined = qtensor_from_ggml(dtype, &raw, vec![total, cols], &self.device)?;
            return Linear::quantized(Arc::new(joined), bias);
        }
        // Mixed types: each block on its own, the bias split back over them.
        let mut out = Vec::with_capacity(parts.len());
        for (p, b) in parts.into_iter().zip(split_bias(bias.as_ref(), rows)?) {
            out.push(if Self::is_dense_type(p.dtype()) {
                Linear::dense(p.dequantize(&self.device)?.to_dtype(self.dtype)?, b)
            } else {
                Linear::quantized(Arc::new(p), b)?
            });
        }
        Ok(Linear::Concat(out))
    }

    pub fn embedding(&self, ours: &str, shape: &[usize]) -> Result<Embedding> {
        let q = self.load_q(ours, shape)?;
        if self.dequantize || Self::is_dense_type(q.dtype()) {
            return Ok(Embedding::Dense(
                q.dequantize(&self.device)?.to_dtype(self.dtype)?,
            ));
        }
        Ok(Embedding::Quantized {
            table: Arc::new(q),
            dtype: self.dtype,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `permute` (convert_hf_to_gguf.py): reshape to [heads, 2, d/2], swap the
    /// last two axes.
    fn llama_cpp_permute(rows: &[u32], heads: usize) -> Vec<u32> {
        let d = rows.len() / heads;
        let mut out = vec![0; rows.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..d / 2 {
                    out[h * d + 2 * i + j] = rows[h * d + j * (d / 2) + i];
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        let rows: Vec<u32> = (0..24).collect();
        for heads in [1, 3, 6] {
            let permuted = llama_cpp_permute(&rows, heads);
            let raw: Vec<u8> = permuted.iter().flat_map(|r| r.to_le_bytes()).collect();
            let back = unpermute_rows(&raw, 4, heads);
            let back: Vec<u32> = back
                .chunks(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(back, rows, "heads {heads}");
        }
    }
}
