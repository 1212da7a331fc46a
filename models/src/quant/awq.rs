//! AutoAWQ GEMM checkpoints (`version: gemm`), per layer `{prefix}.`:
//!
//! - `qweight` `[K, N/8]` i32, packed along N in AWQ's order: nibble `i` of word `(k, c)`
//!   holds column `8c + [0,2,4,6,1,3,5,7][i]` (AutoAWQ's `pack`; vLLM undoes it with
//!   `AWQ_REVERSE_ORDER = [0,4,1,5,2,6,3,7]`);
//! - `qzeros` `[G, N/8]` i32, the same packing, zero points as they are;
//! - `scales` `[G, N]` f16, `G = K / group_size`; no act-order.
//!
//! Repacked at load into [`super::int4`]'s layout (weights along K, zeros in natural order):
//! the same bytes, one layout for every kernel.

use super::Int4Config;
use super::gptq::{Get, check_shape, required, words};
use super::int4::Int4Parts;
use super::pack::{AWQ_ORDER, NATURAL_ORDER, pack_cols, pack_rows, unpack_cols};
use crate::Result;
use candle_core::DType;

/// The layer `prefix` of `n` outputs and `k` inputs.
pub fn load(get: Get, prefix: &str, n: usize, k: usize, cfg: &Int4Config) -> Result<Int4Parts> {
    let qweight = required(get, prefix, "qweight", DType::I32)?;
    let qzeros = required(get, prefix, "qzeros", DType::I32)?;
    let scales = required(get, prefix, "scales", DType::F16)?;
    let groups = cfg.group_size.map_or(1, |g| k.div_ceil(g));
    check_shape(&qweight, &format!("{prefix}.qweight"), k, n / 8)?;
    check_shape(&qzeros, &format!("{prefix}.qzeros"), groups, n / 8)?;
    check_shape(&scales, &format!("{prefix}.scales"), groups, n)?;
    let q = unpack_cols(&words(&qweight)?, k, n, &AWQ_ORDER);
    let z = unpack_cols(&words(&qzeros)?, groups, n, &AWQ_ORDER);
    Ok(Int4Parts {
        method: cfg.method,
        k,
        n,
        group_size: cfg.group_size,
        zero_offset: 0,
        qweight: pack_rows(&q, k, n),
        qzeros: pack_cols(&z, groups, n, &NATURAL_ORDER),
        scales,
        g_idx: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int4::Int4Weight;
    use crate::quant::int4::tests::{Reference, max_diff};
    use crate::quant::{Int4Config, QuantMethod};
    use candle_core::{Device, Tensor};
    use std::collections::HashMap;

    fn checkpoint(r: &Reference) -> HashMap<String, Tensor> {
        let dev = &Device::Cpu;
        let t =
            |v: Vec<i32>, rows: usize, cols: usize| Tensor::from_vec(v, (rows, cols), dev).unwrap();
        let mut m = HashMap::new();
        m.insert(
            "l.qweight".into(),
            t(pack_cols(&r.q, r.k, r.n, &AWQ_ORDER), r.k, r.n / 8),
        );
        m.insert(
            "l.qzeros".into(),
            t(
                pack_cols(&r.zeros, r.groups, r.n, &AWQ_ORDER),
                r.groups,
                r.n / 8,
            ),
        );
        m.insert("l.scales".into(), r.scales_f16());
        m
    }

    #[test]
    fn gemm_checkpoints_dequantize_to_the_direct_formula() {
        for group_size in [Some(32), Some(64), None] {
            let r = Reference::random(64, 32, group_size, false, false, 8);
            let ck = checkpoint(&r);
            let get = |name: &str, dtype: DType| -> Result<Option<Tensor>> {
                Ok(ck.get(name).map(|t| t.to_dtype(dtype)).transpose()?)
            };
            let c = Int4Config {
                method: QuantMethod::Awq,
                group_size,
                desc_act: false,
                sym: false,
                zero_offset: 0,
            };
            let w =
                Int4Weight::new("l", load(&get, "l", 32, 64, &c).unwrap(), &Device::Cpu).unwrap();
            assert_eq!(max_diff(&w.dequantize_f32().unwrap(), &r.dense()), 0.0);
            assert_eq!(
                w.label(),
                crate::quant::config::label(QuantMethod::Awq, group_size)
            );
            // Reading AWQ's words in natural order would scramble the columns.
            let natural = unpack_cols(&words(&ck["l.qweight"]).unwrap(), 64, 32, &NATURAL_ORDER);
            assert_ne!(natural, r.q);
        }
    }
}
