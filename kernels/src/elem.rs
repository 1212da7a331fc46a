//! Element conversions shared by the CPU kernels: all arithmetic happens in f32, whatever the
//! storage dtype, so bf16/f16 results match the GPU kernels' accumulation precision.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};
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
