//! The in-memory int4 weight both formats load into (the layout the CUDA kernels read):
//!
//! - `qweight` `[K/8, N]` i32: `q[k, n]` at nibble `k % 8` of word `(k/8, n)` (GPTQ's layout;
//!   AWQ's is repacked at load);
//! - `qzeros` `[G, N/8]` i32: stored zero of group `g`, column `n` at nibble `n % 8` of word
//!   `(g, n/8)` in natural order; the zero point is that plus `zero_offset` (1 for GPTQ v1,
//!   which stores zero − 1);
//! - `scales` `[G, N]` (f16 as in the checkpoint);
//! - `g_idx` `[K]`: the group of input `k` under GPTQ act-order; `None` when it is
//!   `k / group_size` (or 0 for one group).
//!
//! `W[n, k] = (q[k, n] − zero[g(k), n]) · scale[g(k), n]`. The matmul is
//! `indus_kernels::int4_matmul`: on the CPU it dequantizes and multiplies in f32, on CUDA the
//! W4A16 kernels read the packed tensors, which are what stays in memory.

use super::QuantMethod;
use super::config::label;
use crate::{ModelError, Result};
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone)]
pub struct Int4Weight {
    /// The checkpoint format it came from (its name is the layer's quantized type).
    pub method: QuantMethod,
    /// Inputs.
    pub k: usize,
    /// Outputs.
    pub n: usize,
    pub group_size: Option<usize>,
    pub zero_offset: u8,
    pub qweight: Tensor,
    pub qzeros: Tensor,
    pub scales: Tensor,
    pub g_idx: Option<Tensor>,
}

/// The packed parts of one layer as loaded, before they become tensors.
pub struct Int4Parts {
    pub method: QuantMethod,
    pub k: usize,
    pub n: usize,
    pub group_size: Option<usize>,
    pub zero_offset: u8,
    /// `[K/8, N]`, packed along K.
    pub qweight: Vec<i32>,
    /// `[G, N/8]`, packed along N in natural order.
    pub qzeros: Vec<i32>,
    /// `[G, N]`, any float dtype.
    pub scales: Tensor,
    pub g_idx: Option<Vec<i32>>,
}

impl Int4Weight {
    /// Checks the parts' shapes against `k`, `n` and the group size; `name` names the layer
    /// in errors.
    pub fn new(name: &str, p: Int4Parts, device: &Device) -> Result<Self> {
        let err = |reason: String| ModelError::Weight {
            name: name.to_string(),
            reason,
        };
        let (k, n) = (p.k, p.n);
        if k % 8 != 0 || n % 8 != 0 {
            return Err(err(format!(
                "int4 layer of {k} inputs and {n} outputs: both must be multiples of 8"
            )));
        }
        let (groups, scale_cols) = p.scales.dims2()?;
        if scale_cols != n {
            return Err(err(format!(
                "scales have {scale_cols} columns, expected {n}"
            )));
        }
        let expected_groups = match p.group_size {
            Some(g) => k.div_ceil(g),
            None => 1,
        };
        if groups != expected_groups {
            return Err(err(format!(
                "scales have {groups} groups, expected {expected_groups} (group size {:?}, {k} inputs)",
                p.group_size
            )));
        }
        if p.qweight.len() != k / 8 * n {
            return Err(err(format!(
                "qweight has {} words, expected {} ([{}, {n}])",
                p.qweight.len(),
                k / 8 * n,
                k / 8
            )));
        }
        if p.qzeros.len() != groups * n / 8 {
            return Err(err(format!(
                "qzeros has {} words, expected {} ([{groups}, {}])",
                p.qzeros.len(),
                groups * n / 8,
                n / 8
            )));
        }
        let g_idx = match p.g_idx {
            Some(g) => {
                if g.len() != k {
                    return Err(err(format!("g_idx has {} entries, expected {k}", g.len())));
                }
                if let Some(bad) = g.iter().find(|&&v| v < 0 || v as usize >= groups) {
                    return Err(err(format!(
                        "g_idx entry {bad} is not a group (0..{groups})"
                    )));
                }
                let trivial = g
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v as usize == default_group(i, p.group_size));
                (!trivial).then_some(g)
            }
            None => None,
        };
        Ok(Self {
            method: p.method,
            k,
            n,
            group_size: p.group_size,
            zero_offset: p.zero_offset,
            qweight: Tensor::from_vec(p.qweight, (k / 8, n), device)?,
            qzeros: Tensor::from_vec(p.qzeros, (groups, n / 8), device)?,
            scales: p.scales.to_device(device)?,
            g_idx: g_idx.map(|g| Tensor::from_vec(g, k, device)).transpose()?,
        })
    }

    pub fn groups(&self) -> usize {
        self.scales.dims()[0]
    }

    /// The layer's quantized type, e.g. `gptq-int4-g128`.
    pub fn label(&self) -> String {
        label(self.method, self.group_size)
    }

    /// Bytes the packed weight takes in memory.
    pub fn bytes(&self) -> usize {
        [&self.qweight, &self.qzeros, &self.scales]
            .into_iter()
            .chain(self.g_idx.as_ref())
            .map(crate::linear::tensor_bytes)
            .sum()
    }

    /// The packed tensors as the kernels take them.
    fn matrix(&self) -> indus_kernels::int4_matmul::Int4Matrix<'_> {
        indus_kernels::int4_matmul::Int4Matrix {
            k: self.k,
            n: self.n,
            group_size: self.group_size,
            zero_offset: self.zero_offset,
            qweight: &self.qweight,
            qzeros: &self.qzeros,
            scales: &self.scales,
            g_idx: self.g_idx.as_ref(),
        }
    }

    /// The dense `[N, K]` weight, row-major, in f32 (the kernels' reference dequantization).
    pub fn dequantize_f32(&self) -> Result<Vec<f32>> {
        Ok(self.matrix().dequantize_f32()?)
    }

    /// The dense `[N, K]` weight as a tensor of `dtype` on the weight's device.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        let w = Tensor::from_vec(self.dequantize_f32()?, (self.n, self.k), &Device::Cpu)?;
        Ok(w.to_device(self.qweight.device())?.to_dtype(dtype)?)
    }

    /// `x · Wᵀ` (no bias) in `x`'s dtype: on the CPU the reference (dequantized, f32); on CUDA
    /// the W4A16 kernels, the weight staying packed.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(indus_kernels::int4_matmul::int4_matmul(x, &self.matrix())?)
    }

    /// Row blocks (output blocks) of one fused projection as one weight, when they share
    /// inputs, grouping and format: the packed tensors joined along N, which is exact
    /// (every packed word lies within one column block, as N of each part is a multiple
    /// of 8). `None` when they cannot be joined.
    pub fn join(parts: &[Int4Weight]) -> Result<Option<Int4Weight>> {
        let Some(first) = parts.first() else {
            return Ok(None);
        };
        for p in &parts[1..] {
            let same = p.method == first.method
                && p.k == first.k
                && p.group_size == first.group_size
                && p.zero_offset == first.zero_offset
                && p.groups() == first.groups()
                && p.scales.dtype() == first.scales.dtype();
            if !same {
                return Ok(None);
            }
            match (&p.g_idx, &first.g_idx) {
                (None, None) => {}
                (Some(a), Some(b)) => {
                    if a.to_vec1::<i32>()? != b.to_vec1::<i32>()? {
                        return Ok(None);
                    }
                }
                _ => return Ok(None),
            }
        }
        let cat = |f: fn(&Int4Weight) -> &Tensor| -> Result<Tensor> {
            let ts: Vec<&Tensor> = parts.iter().map(f).collect();
            Ok(Tensor::cat(&ts, 1)?)
        };
        Ok(Some(Int4Weight {
            method: first.method,
            k: first.k,
            n: parts.iter().map(|p| p.n).sum(),
            group_size: first.group_size,
            zero_offset: first.zero_offset,
            qweight: cat(|p| &p.qweight)?,
            qzeros: cat(|p| &p.qzeros)?,
            scales: cat(|p| &p.scales)?,
            g_idx: first.g_idx.clone(),
        }))
    }
}

/// The group of input `i` without act-order.
fn default_group(i: usize, group_size: Option<usize>) -> usize {
    group_size.map_or(0, |g| i / g)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::pack::{NATURAL_ORDER, pack_cols, pack_rows};
    use candle_core::Module;

    /// A random `[n, k]` int4 layer: values, zeros, f16-exact scales and the groups.
    pub(crate) struct Reference {
        pub k: usize,
        pub n: usize,
        /// `[K, N]`
        pub q: Vec<u8>,
        /// `[G, N]` real zero points
        pub zeros: Vec<u8>,
        /// `[G, N]`
        pub scales: Vec<f32>,
        /// group of each input
        pub group: Vec<usize>,
        pub groups: usize,
    }

    pub(crate) fn lcg(state: &mut u64) -> u32 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*state >> 33) as u32
    }

    impl Reference {
        /// `act_order`: a pseudo-random permutation of the inputs decides the groups.
        pub(crate) fn random(
            k: usize,
            n: usize,
            group_size: Option<usize>,
            sym: bool,
            act_order: bool,
            seed: u64,
        ) -> Self {
            let mut st = seed;
            let gs = group_size.unwrap_or(k);
            let groups = k.div_ceil(gs);
            let mut order: Vec<usize> = (0..k).collect();
            if act_order {
                for i in (1..k).rev() {
                    order.swap(i, lcg(&mut st) as usize % (i + 1));
                }
            }
            let mut group = vec![0; k];
            for (pos, &input) in order.iter().enumerate() {
                group[input] = pos / gs;
            }
            let q = (0..k * n).map(|_| (lcg(&mut st) % 16) as u8).collect();
            let zeros = (0..groups * n)
                .map(|_| {
                    if sym {
                        8
                    } else {
                        1 + (lcg(&mut st) % 15) as u8
                    }
                })
                .collect();
            let scales = (0..groups * n)
                .map(|_| {
                    let s = 1e-3 + (lcg(&mut st) % 1000) as f32 * 1e-5;
                    half::f16::from_f32(s).to_f32()
                })
                .collect();
            Self {
                k,
                n,
                q,
                zeros,
                scales,
                group,
                groups,
            }
        }

        /// `W[n, k]` computed directly in f32.
        pub(crate) fn dense(&self) -> Vec<f32> {
            let (k, n) = (self.k, self.n);
            let mut w = vec![0f32; n * k];
            for nn in 0..n {
                for kk in 0..k {
                    let g = self.group[kk];
                    w[nn * k + kk] = (self.q[kk * n + nn] as f32 - self.zeros[g * n + nn] as f32)
                        * self.scales[g * n + nn];
                }
            }
            w
        }

        pub(crate) fn scales_f16(&self) -> Tensor {
            let s: Vec<half::f16> = self
                .scales
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect();
            Tensor::from_vec(s, (self.groups, self.n), &Device::Cpu).unwrap()
        }

        /// The canonical parts (GPTQ v2 zeros: stored as they are).
        pub(crate) fn parts(&self, group_size: Option<usize>, g_idx: bool) -> Int4Parts {
            Int4Parts {
                method: QuantMethod::Gptq,
                k: self.k,
                n: self.n,
                group_size,
                zero_offset: 0,
                qweight: pack_rows(&self.q, self.k, self.n),
                qzeros: pack_cols(&self.zeros, self.groups, self.n, &NATURAL_ORDER),
                scales: self.scales_f16(),
                g_idx: g_idx.then(|| self.group.iter().map(|&g| g as i32).collect()),
            }
        }
    }

    pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn dequantizes_like_the_direct_formula_grouped_per_channel_and_act_order() {
        for (group_size, act_order, sym) in [
            (Some(32), false, false),
            (Some(32), true, false),
            (Some(32), true, true),
            (None, false, true),
            (None, false, false),
            (Some(16), false, true),
        ] {
            let r = Reference::random(96, 40, group_size, sym, act_order, 5);
            let w = Int4Weight::new("t", r.parts(group_size, act_order), &Device::Cpu).unwrap();
            assert_eq!(w.g_idx.is_some(), act_order);
            let got = w.dequantize_f32().unwrap();
            assert_eq!(
                max_diff(&got, &r.dense()),
                0.0,
                "{group_size:?} {act_order} {sym}"
            );
        }
    }

    #[test]
    fn forward_matches_dense_matmul_and_join_is_exact() {
        let parts: Vec<Reference> = [16, 8, 24]
            .iter()
            .enumerate()
            .map(|(i, &n)| Reference::random(64, n, Some(32), false, false, 11 + i as u64))
            .collect();
        let weights: Vec<Int4Weight> = parts
            .iter()
            .map(|r| Int4Weight::new("t", r.parts(Some(32), false), &Device::Cpu).unwrap())
            .collect();
        let joined = Int4Weight::join(&weights).unwrap().expect("joinable");
        assert_eq!(joined.n, 48);
        let dense: Vec<f32> = parts.iter().flat_map(|r| r.dense()).collect();
        assert_eq!(max_diff(&joined.dequantize_f32().unwrap(), &dense), 0.0);
        let x = Tensor::from_vec(
            (0..3 * 64)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0)
                .collect::<Vec<_>>(),
            (1, 3, 64),
            &Device::Cpu,
        )
        .unwrap();
        let w = Tensor::from_vec(dense, (48, 64), &Device::Cpu).unwrap();
        let want = candle_nn::Linear::new(w, None).forward(&x).unwrap();
        let got = joined.forward(&x).unwrap();
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        // Different act-order permutations cannot share one g_idx.
        let a = Reference::random(64, 8, Some(32), false, true, 1);
        let b = Reference::random(64, 8, Some(32), false, true, 2);
        let (a, b) = (
            Int4Weight::new("a", a.parts(Some(32), true), &Device::Cpu).unwrap(),
            Int4Weight::new("b", b.parts(Some(32), true), &Device::Cpu).unwrap(),
        );
        assert!(Int4Weight::join(&[a, b]).unwrap().is_none());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let r = Reference::random(64, 16, Some(32), false, false, 3);
        let mut p = r.parts(Some(32), false);
        p.group_size = Some(16);
        let e = Int4Weight::new("layer", p, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer") && e.contains("groups"), "{e}");
        let mut p = r.parts(Some(32), false);
        p.qweight.pop();
        assert!(Int4Weight::new("layer", p, &Device::Cpu).is_err());
        let mut p = r.parts(Some(32), true);
        if let Some(g) = p.g_idx.as_mut() {
            g[3] = 7;
        }
        assert!(Int4Weight::new("layer", p, &Device::Cpu).is_err());
    }
}
