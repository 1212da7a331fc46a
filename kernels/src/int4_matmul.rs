//! W4A16: `y = x · Wᵀ` for an int4 weight-only layer (GPTQ, AWQ), with the weight kept packed.
//!
//! Layout (GPTQ's, the one models/src/quant/int4.rs loads both formats into):
//! - `qweight` `[K/8, N]` i32: `q[k, n]` at nibble `k % 8` of word `(k/8, n)`;
//! - `qzeros` `[G, N/8]` i32: the stored zero of group `g`, column `n`, at nibble `n % 8` of word `(g, n/8)`; the
//!   zero point is that plus `zero_offset` (1 for GPTQ v1 checkpoints, which store zero − 1);
//! - `scales` `[G, N]`, any float dtype (the CUDA kernels read f16, the checkpoints' dtype);
//! - `g_idx` `[K]` i32 (act-order): the group of input `k`; without it `k / group_size`, or one group.
//!
//! `W[n, k] = (q[k, n] − zero[g(k), n]) · scale[g(k), n]`.
//!
//! The CPU path is the reference: [`dequantize_reference`] in f32, then a dense f32 matmul. On CUDA
//! (kernels/cuda/int4_matmul.cu) a batch of at most 16 rows runs the small-batch kernel, which dequantizes in
//! registers and reads each packed word once for all rows (split-K over slices of K so a decode step fills the
//! GPU); a larger batch dequantizes the weight into a dense `[K, N]` of x's dtype and lets cuBLAS multiply.

use candle_core::{DType, Device, Result, Tensor};

/// One int4 layer's packed tensors, borrowed from whoever holds them.
#[derive(Debug, Clone, Copy)]
pub struct Int4Matrix<'a> {
    /// Inputs.
    pub k: usize,
    /// Outputs.
    pub n: usize,
    /// `None`: one group over all of K.
    pub group_size: Option<usize>,
    pub zero_offset: u8,
    pub qweight: &'a Tensor,
    pub qzeros: &'a Tensor,
    pub scales: &'a Tensor,
    pub g_idx: Option<&'a Tensor>,
}

/// The dense `[N, K]` weight, row-major, in f32: the reference every path is checked against.
/// `scales` is `[G, N]` row-major; slices must have the sizes of the layout above (checked by
/// [`Int4Matrix::check`] for tensors).
#[allow(clippy::too_many_arguments)]
pub fn dequantize_reference(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f32],
    g_idx: Option<&[i32]>,
    k: usize,
    n: usize,
    group_size: Option<usize>,
    zero_offset: u8,
) -> Vec<f32> {
    let offset = f32::from(zero_offset);
    let mut out = vec![0f32; n * k];
    for kk in 0..k {
        let g = match g_idx {
            Some(g) => g[kk] as usize,
            None => group_size.map_or(0, |gs| kk / gs),
        };
        let (words, shift) = (&qweight[(kk / 8) * n..][..n], 4 * (kk % 8));
        let (zeros, s) = (&qzeros[g * (n / 8)..][..n / 8], &scales[g * n..][..n]);
        for nn in 0..n {
            let q = ((words[nn] as u32 >> shift) & 0xF) as f32;
            let z = ((zeros[nn / 8] as u32 >> (4 * (nn % 8))) & 0xF) as f32 + offset;
            out[nn * k + kk] = (q - z) * s[nn];
        }
    }
    out
}

impl Int4Matrix<'_> {
    /// Number of groups (rows of `scales`).
    pub fn groups(&self) -> usize {
        self.scales.dims().first().copied().unwrap_or(0)
    }

    /// Checks the tensors against `k`, `n` and the grouping.
    pub fn check(&self) -> Result<()> {
        let (k, n, g) = (self.k, self.n, self.groups());
        if !k.is_multiple_of(8) || !n.is_multiple_of(8) {
            candle_core::bail!("int4 matmul: K = {k} and N = {n} must be multiples of 8");
        }
        let expect = |t: &Tensor, what: &str, dtype: Option<DType>, dims: &[usize]| -> Result<()> {
            if t.dims() != dims || dtype.is_some_and(|d| t.dtype() != d) {
                candle_core::bail!(
                    "int4 matmul: {what} is {:?} {:?}, expected {dims:?}{}",
                    t.dtype(),
                    t.dims(),
                    dtype.map_or(String::new(), |d| format!(" {d:?}"))
                );
            }
            Ok(())
        };
        expect(self.qweight, "qweight", Some(DType::I32), &[k / 8, n])?;
        expect(self.qzeros, "qzeros", Some(DType::I32), &[g, n / 8])?;
        expect(self.scales, "scales", None, &[g, n])?;
        if let Some(gi) = self.g_idx {
            expect(gi, "g_idx", Some(DType::I32), &[k])?;
        }
        let want_groups = self.group_size.map_or(1, |gs| k.div_ceil(gs.max(1)));
        if self.g_idx.is_none() && g != want_groups {
            candle_core::bail!(
                "int4 matmul: {g} groups, expected {want_groups} for group size {:?}",
                self.group_size
            );
        }
        Ok(())
    }

    /// [`dequantize_reference`] of the tensors (copied to the host).
    pub fn dequantize_f32(&self) -> Result<Vec<f32>> {
        self.check()?;
        let words = |t: &Tensor| -> Result<Vec<i32>> { t.flatten_all()?.to_vec1::<i32>() };
        let scales = self
            .scales
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let g_idx = self.g_idx.map(words).transpose()?;
        Ok(dequantize_reference(
            &words(self.qweight)?,
            &words(self.qzeros)?,
            &scales,
            g_idx.as_deref(),
            self.k,
            self.n,
            self.group_size,
            self.zero_offset,
        ))
    }
}

/// `x · Wᵀ` for `x` of shape `[..., K]`: `[..., N]` in x's dtype, on x's device.
pub fn int4_matmul(x: &Tensor, w: &Int4Matrix<'_>) -> Result<Tensor> {
    let dims = x.dims();
    let Some((&k, lead)) = dims.split_last() else {
        candle_core::bail!("int4 matmul: x must have at least one dimension");
    };
    if k != w.k {
        candle_core::bail!("int4 matmul: x has {k} inputs, the weight {}", w.k);
    }
    let m: usize = lead.iter().product();
    let x2 = x.reshape((m, k))?;
    let y = match x.device() {
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => {
            w.check()?;
            crate::cuda::int4::matmul(&x2.contiguous()?, w)?
        }
        _ => {
            let wt = Tensor::from_vec(w.dequantize_f32()?, (w.n, k), &Device::Cpu)?
                .to_device(x.device())?;
            x2.to_dtype(DType::F32)?
                .matmul(&wt.t()?)?
                .to_dtype(x.dtype())?
        }
    };
    let mut out = lead.to_vec();
    out.push(w.n);
    y.reshape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Rng;

    /// A random layer: values, zeros and scales as plain arrays, then packed.
    struct Layer {
        k: usize,
        n: usize,
        q: Vec<u8>,
        z: Vec<u8>,
        s: Vec<f32>,
        group: Vec<usize>,
    }

    fn layer(
        k: usize,
        n: usize,
        group_size: Option<usize>,
        act_order: bool,
        rng: &mut Rng,
    ) -> Layer {
        let groups = group_size.map_or(1, |g| k.div_ceil(g));
        let bits = |rng: &mut Rng| (rng.uniform() * 16.0).min(15.0) as u8;
        let q = (0..k * n).map(|_| bits(rng)).collect();
        let z = (0..groups * n).map(|_| bits(rng)).collect();
        let s = (0..groups * n)
            .map(|_| 0.001 + 0.02 * rng.uniform())
            .collect();
        let mut group: Vec<usize> = (0..k).map(|i| group_size.map_or(0, |g| i / g)).collect();
        if act_order {
            // A fixed permutation of the groups, as act-order's g_idx is.
            group.reverse();
        }
        Layer {
            k,
            n,
            q,
            z,
            s,
            group,
        }
    }

    /// The packed words; `l.z` are the stored zeros (the zero point adds the offset).
    fn pack(l: &Layer) -> (Vec<i32>, Vec<i32>) {
        let mut qw = vec![0u32; l.k / 8 * l.n];
        for kk in 0..l.k {
            for nn in 0..l.n {
                qw[(kk / 8) * l.n + nn] |= u32::from(l.q[kk * l.n + nn]) << (4 * (kk % 8));
            }
        }
        let groups = l.s.len() / l.n;
        let mut qz = vec![0u32; groups * l.n / 8];
        for g in 0..groups {
            for nn in 0..l.n {
                let stored = l.z[g * l.n + nn];
                qz[g * (l.n / 8) + nn / 8] |= u32::from(stored) << (4 * (nn % 8));
            }
        }
        let cast = |v: Vec<u32>| v.into_iter().map(|w| w as i32).collect();
        (cast(qw), cast(qz))
    }

    #[test]
    fn the_reference_is_the_formula_for_every_grouping_and_zero_offset() {
        let mut rng = Rng::new(7);
        for (k, n, gs, act) in [
            (64, 16, Some(32), false),
            (64, 24, Some(16), true),
            (40, 8, None, false),
            (48, 16, Some(32), false), // a last group shorter than the others
        ] {
            for zero_offset in [0u8, 1] {
                let l = layer(k, n, gs, act, &mut rng);
                let (qw, qz) = pack(&l);
                let g_idx: Vec<i32> = l.group.iter().map(|&g| g as i32).collect();
                let w = dequantize_reference(
                    &qw,
                    &qz,
                    &l.s,
                    act.then_some(&g_idx[..]),
                    k,
                    n,
                    gs,
                    zero_offset,
                );
                for kk in 0..k {
                    for nn in 0..n {
                        let g = l.group[kk];
                        let zero = f32::from(l.z[g * n + nn]) + f32::from(zero_offset);
                        let want = (f32::from(l.q[kk * n + nn]) - zero) * l.s[g * n + nn];
                        assert_eq!(w[nn * k + kk], want, "k {kk} n {nn}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_matmul_equals_a_dense_one_and_keeps_leading_dims() -> Result<()> {
        let mut rng = Rng::new(11);
        let (k, n) = (64, 32);
        let l = layer(k, n, Some(32), true, &mut rng);
        let (qw, qz) = pack(&l);
        let dev = Device::Cpu;
        let g_idx: Vec<i32> = l.group.iter().map(|&g| g as i32).collect();
        let t_qw = Tensor::from_vec(qw.clone(), (k / 8, n), &dev)?;
        let t_qz = Tensor::from_vec(qz.clone(), (2, n / 8), &dev)?;
        let t_s = Tensor::from_vec(l.s.clone(), (2, n), &dev)?;
        let t_g = Tensor::from_vec(g_idx.clone(), k, &dev)?;
        let w = Int4Matrix {
            k,
            n,
            group_size: Some(32),
            zero_offset: 1,
            qweight: &t_qw,
            qzeros: &t_qz,
            scales: &t_s,
            g_idx: Some(&t_g),
        };
        let x = Tensor::from_vec(rng.normals(2 * 3 * k, 1.0), (2, 3, k), &dev)?;
        let y = int4_matmul(&x, &w)?;
        assert_eq!(y.dims(), [2, 3, n]);
        let dense = dequantize_reference(&qw, &qz, &l.s, Some(&g_idx), k, n, Some(32), 1);
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ys = y.flatten_all()?.to_vec1::<f32>()?;
        for r in 0..6 {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| xs[r * k + i] * dense[c * k + i]).sum();
                assert!((ys[r * n + c] - want).abs() <= 1e-4 * (1.0 + want.abs()));
            }
        }
        // A weight whose shapes disagree with K/N is refused, not read out of bounds.
        let bad = Int4Matrix { n: 40, ..w };
        assert!(int4_matmul(&x, &bad).is_err());
        Ok(())
    }
}
