//! GPTQ checkpoints (AutoGPTQ / optimum / GPTQModel, v1 and v2), per layer `{prefix}.`:
//!
//! - `qweight` `[K/8, N]` i32, packed along K: input `k` at nibble `k % 8` of row `k / 8`;
//! - `qzeros` `[G, N/8]` i32, packed along N in natural order; v1 stores zero − 1
//!   (AutoGPTQ's `zeros -= 1` before packing; exllama and vLLM add the 1 back), v2 the zero;
//! - `scales` `[G, N]` f16, `G = ceil(K / group_size)` (1 for `group_size: -1`);
//! - `g_idx` `[K]` i32: the group of each input (act-order, `desc_act`, permutes it).
//!
//! This is already the in-memory layout of [`super::int4`]: the tensors are kept as they are.

use super::Int4Config;
use super::int4::Int4Parts;
use crate::{ModelError, Result};
use candle_core::{DType, Tensor};

/// A checkpoint tensor `{prefix}.{suffix}` converted to `dtype`, if the checkpoint has it.
pub type Get<'a> = &'a dyn Fn(&str, DType) -> Result<Option<Tensor>>;

pub(crate) fn required(get: Get, prefix: &str, suffix: &str, dtype: DType) -> Result<Tensor> {
    get(&format!("{prefix}.{suffix}"), dtype)?.ok_or_else(|| ModelError::Weight {
        name: format!("{prefix}.{suffix}"),
        reason: "missing from the quantized checkpoint".into(),
    })
}

/// `t` must be `[rows, cols]`.
pub(crate) fn check_shape(t: &Tensor, name: &str, rows: usize, cols: usize) -> Result<()> {
    if t.dims() != [rows, cols] {
        return Err(ModelError::Weight {
            name: name.to_string(),
            reason: format!("shape {:?}, expected [{rows}, {cols}]", t.dims()),
        });
    }
    Ok(())
}

pub(crate) fn words(t: &Tensor) -> Result<Vec<i32>> {
    Ok(t.flatten_all()?.to_vec1::<i32>()?)
}

/// The layer `prefix` of `n` outputs and `k` inputs.
pub fn load(get: Get, prefix: &str, n: usize, k: usize, cfg: &Int4Config) -> Result<Int4Parts> {
    let qweight = required(get, prefix, "qweight", DType::I32)?;
    let qzeros = required(get, prefix, "qzeros", DType::I32)?;
    let scales = required(get, prefix, "scales", DType::F16)?;
    let groups = cfg.group_size.map_or(1, |g| k.div_ceil(g));
    check_shape(&qweight, &format!("{prefix}.qweight"), k / 8, n)?;
    check_shape(&qzeros, &format!("{prefix}.qzeros"), groups, n / 8)?;
    check_shape(&scales, &format!("{prefix}.scales"), groups, n)?;
    let g_idx = match get(&format!("{prefix}.g_idx"), DType::I32)? {
        Some(g) => {
            if g.dims() != [k] {
                return Err(ModelError::Weight {
                    name: format!("{prefix}.g_idx"),
                    reason: format!("shape {:?}, expected [{k}]", g.dims()),
                });
            }
            Some(g.to_vec1::<i32>()?)
        }
        None if cfg.desc_act => {
            return Err(ModelError::Weight {
                name: format!("{prefix}.g_idx"),
                reason: "missing, and desc_act (act-order) needs it".into(),
            });
        }
        None => None,
    };
    Ok(Int4Parts {
        method: cfg.method,
        k,
        n,
        group_size: cfg.group_size,
        zero_offset: cfg.zero_offset,
        qweight: words(&qweight)?,
        qzeros: words(&qzeros)?,
        scales,
        g_idx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int4::Int4Weight;
    use crate::quant::int4::tests::{Reference, max_diff};
    use crate::quant::pack::{NATURAL_ORDER, pack_cols, pack_rows};
    use crate::quant::{Int4Config, QuantMethod};
    use candle_core::Device;
    use std::collections::HashMap;

    /// A layer as AutoGPTQ writes it: v1 zeros (zero − 1), i32 g_idx always present.
    fn checkpoint(r: &Reference) -> HashMap<String, Tensor> {
        let dev = &Device::Cpu;
        let minus_one: Vec<u8> = r.zeros.iter().map(|z| z.wrapping_sub(1) & 0xF).collect();
        let mut m = HashMap::new();
        let t =
            |v: Vec<i32>, rows: usize, cols: usize| Tensor::from_vec(v, (rows, cols), dev).unwrap();
        m.insert(
            "l.qweight".into(),
            t(pack_rows(&r.q, r.k, r.n), r.k / 8, r.n),
        );
        m.insert(
            "l.qzeros".into(),
            t(
                pack_cols(&minus_one, r.groups, r.n, &NATURAL_ORDER),
                r.groups,
                r.n / 8,
            ),
        );
        m.insert("l.scales".into(), r.scales_f16());
        let g: Vec<i32> = r.group.iter().map(|&g| g as i32).collect();
        m.insert("l.g_idx".into(), Tensor::from_vec(g, r.k, dev).unwrap());
        m
    }

    fn cfg(group_size: Option<usize>, desc_act: bool, sym: bool) -> Int4Config {
        Int4Config {
            method: QuantMethod::Gptq,
            group_size,
            desc_act,
            sym,
            zero_offset: 1,
        }
    }

    #[test]
    fn v1_checkpoints_dequantize_to_the_direct_formula() {
        for (group_size, act_order, sym) in [
            (Some(32), true, false),
            (Some(32), true, true),
            (Some(32), false, false),
            (Some(64), false, true),
            (None, false, true),
            (None, false, false),
        ] {
            // 80 inputs: the last group of 32 is partial (ceil, as AutoGPTQ).
            let r = Reference::random(80, 24, group_size, sym, act_order, 21);
            let ck = checkpoint(&r);
            let get = |name: &str, dtype: DType| -> Result<Option<Tensor>> {
                Ok(ck.get(name).map(|t| t.to_dtype(dtype)).transpose()?)
            };
            let c = cfg(group_size, act_order, sym);
            let parts = load(&get, "l", 24, 80, &c).unwrap();
            let w = Int4Weight::new("l", parts, &Device::Cpu).unwrap();
            // A g_idx of plain k / group_size is dropped.
            assert_eq!(w.g_idx.is_some(), act_order, "{group_size:?}");
            assert_eq!(max_diff(&w.dequantize_f32().unwrap(), &r.dense()), 0.0);
        }
    }

    #[test]
    fn act_order_without_g_idx_and_wrong_shapes_are_errors() {
        let r = Reference::random(64, 16, Some(32), false, true, 4);
        let mut ck = checkpoint(&r);
        ck.remove("l.g_idx");
        let get = |name: &str, dtype: DType| -> Result<Option<Tensor>> {
            Ok(ck.get(name).map(|t| t.to_dtype(dtype)).transpose()?)
        };
        let e = load(&get, "l", 16, 64, &cfg(Some(32), true, false))
            .err()
            .unwrap();
        assert!(e.to_string().contains("l.g_idx"), "{e}");
        let e = load(&get, "l", 16, 64, &cfg(Some(16), false, false))
            .err()
            .unwrap();
        assert!(e.to_string().contains("l.qzeros"), "{e}");
    }
}
