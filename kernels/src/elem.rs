//! Element conversions shared by the CPU kernels: all arithmetic happens in f32, whatever the
//! storage dtype, so bf16/f16 results match the GPU kernels' accumulation precision.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor};
use half::{bf16, f16};

pub(crate) trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl Elem for f32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Elem for bf16 {
    #[inline]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

impl Elem for f16 {
    #[inline]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// The contiguous slice a layout views, or an error naming the op: the CPU kernels index
/// their inputs directly and never support strided views.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout, op: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Reads an index tensor (slot mapping, positions) as i64, whichever integer dtype it has.
pub(crate) fn index_values(storage: &CpuStorage, layout: &Layout, op: &str) -> Result<Vec<i64>> {
    Ok(match storage {
        CpuStorage::I64(v) => contiguous(v, layout, op)?.to_vec(),
        CpuStorage::U32(v) => contiguous(v, layout, op)?
            .iter()
            .map(|&x| x as i64)
            .collect(),
        CpuStorage::I32(v) => contiguous(v, layout, op)?
            .iter()
            .map(|&x| x as i64)
            .collect(),
        other => candle_core::bail!("{op}: index tensor has dtype {:?}", other.dtype()),
    })
}

pub(crate) fn unsupported(op: &str, storage: &CpuStorage) -> candle_core::Error {
    candle_core::Error::Msg(format!("{op}: unsupported dtype {:?}", storage.dtype()))
}

/// Whether every tensor is f32 on the CPU: the encoder ops' fused CPU kernels take f32
/// slices, and anything else goes to their candle-op references.
pub(crate) fn cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// A custom op's f32 input as the contiguous slice its layout views, or an error naming the op.
pub(crate) fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => contiguous(v, l, op),
        other => Err(unsupported(op, other)),
    }
}

/// Test helpers shared by the kernels' unit tests.
#[cfg(test)]
pub(crate) mod test_tensors {
    use candle_core::{Device, Tensor};

    /// Standard-normal values, seeded, so a failure reproduces.
    pub(crate) fn normal(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::check::metrics::Rng::new(seed);
        let v: Vec<f32> = (0..shape.iter().product()).map(|_| rng.normal()).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The largest `|a - b|` over all elements.
    pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
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
}
