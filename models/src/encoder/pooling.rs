//! Pooling token states into one vector per input, with padding masked out — the
//! sentence-transformers `Pooling` module's modes.

use crate::Result;
use candle_core::{D, DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token (`[CLS]` / `<s>`).
    Cls,
    /// Mean over the tokens.
    Mean,
    /// Element-wise max over the tokens.
    Max,
    /// Mean times sqrt(length)
    MeanSqrtLen,
    /// The last token (decoder embedding models).
    LastToken,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cls => "cls",
            Self::Mean => "mean",
            Self::Max => "max",
            Self::MeanSqrtLen => "mean_sqrt_len_tokens",
            Self::LastToken => "lasttoken",
        }
    }

    /// `hidden`: `[b, l, h]`; `mask`: `[b, l]` (1 for tokens, right-padded); `lens`: the
    /// token count of each row. Returns `[b, h]` f32.
    pub fn apply(self, hidden: &Tensor, mask: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let hidden = hidden.to_dtype(DType::F32)?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
        let counts = || -> Result<Tensor> {
            let c: Vec<f32> = lens.iter().map(|&n| n.max(1) as f32).collect();
            Ok(Tensor::from_vec(c, (lens.len(), 1), hidden.device())?)
        };
        Ok(match self {
            Self::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Self::Mean => hidden
                .broadcast_mul(&mask)?
                .sum(1)?
                .broadcast_div(&counts()?)?,
            Self::MeanSqrtLen => hidden
                .broadcast_mul(&mask)?
                .sum(1)?
                .broadcast_div(&counts()?.sqrt()?)?,
            Self::Max => {
                // Padding gets a very negative value so it never wins the max.
                let pad = ((mask.clone() - 1.0)? * 1e30)?;
                hidden.broadcast_add(&pad)?.max(1)?
            }
            Self::LastToken => {
                let rows = lens
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| hidden.get(i)?.get(n.max(1) - 1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::stack(&rows, 0)?
            }
        })
    }
}

/// Scales each row to unit L2 norm (a zero row stays zero).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn batch() -> (Tensor, Tensor, Vec<usize>) {
        // Two rows: [1,2],[3,4],[pad] and [5,6],[7,8],[9,10].
        let h = Tensor::new(
            &[
                [[1f32, 2.], [3., 4.], [100., 100.]],
                [[5., 6.], [7., 8.], [9., 10.]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let m = Tensor::new(&[[1f32, 1., 0.], [1., 1., 1.]], &Device::Cpu).unwrap();
        (h, m, vec![2, 3])
    }

    fn rows(t: Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    #[test]
    fn every_mode_ignores_padding() {
        let (h, m, lens) = batch();
        assert_eq!(
            rows(Pooling::Mean.apply(&h, &m, &lens).unwrap()),
            [[2., 3.], [7., 8.]]
        );
        assert_eq!(
            rows(Pooling::Max.apply(&h, &m, &lens).unwrap()),
            [[3., 4.], [9., 10.]]
        );
        assert_eq!(
            rows(Pooling::Cls.apply(&h, &m, &lens).unwrap()),
            [[1., 2.], [5., 6.]]
        );
        assert_eq!(
            rows(Pooling::LastToken.apply(&h, &m, &lens).unwrap()),
            [[3., 4.], [9., 10.]]
        );
        let s = rows(Pooling::MeanSqrtLen.apply(&h, &m, &lens).unwrap());
        assert!((s[0][0] - 4.0 / 2f32.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn normalize_gives_unit_rows() {
        let x = Tensor::new(&[[3f32, 4.], [0., 0.]], &Device::Cpu).unwrap();
        assert_eq!(rows(l2_normalize(&x).unwrap()), [[0.6, 0.8], [0., 0.]]);
    }
}
