//! `cuda_fwd` of the sampler (one CTA of [`SAMPLE_THREADS`] threads per row, kernels/cuda/sampling.cu) and of the
//! exp it uses (`fma_exp_f32`, for the GPU check's bit-for-bit comparison).

use super::{Module, alloc, cfg, func, view};
use crate::sampling::{KernelRow, SamplingRow};
use crate::shared::SAMPLE_THREADS;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaStorage, Layout, Result, Shape};

pub(crate) fn forward(
    s: &CudaStorage,
    l: &Layout,
    rows: Option<&[SamplingRow]>,
) -> Result<(CudaStorage, Shape)> {
    let op = "sample";
    let (batch, vocab) = match l.dims() {
        &[b, v] => (b, v),
        d => candle_core::bail!("{op}: logits must be [batch, vocab], got {d:?}"),
    };
    if !matches!(s.slice, CudaStorageSlice::F32(_)) {
        candle_core::bail!("{op}: logits must be f32");
    }
    if vocab > i32::MAX as usize {
        candle_core::bail!("{op}: vocabulary of {vocab} is too large");
    }
    let dev = s.device.clone();
    let x = view::<f32>(s, l, op)?;
    let mut out = alloc::<u32>(&dev, batch)?;
    if batch > 0 && vocab > 0 {
        // Resolved on the host, exactly as the CPU reference resolves them (1/T, ln(min_p)).
        let params = match rows {
            Some(r) => {
                let k: Vec<KernelRow> = r.iter().map(KernelRow::from).collect();
                Some(dev.clone_htod(&k)?)
            }
            None => None,
        };
        let f = func(&dev, Module::Sampling, "sample_f32")?;
        let v = vocab as i32;
        let null = 0u64;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x);
        match &params {
            Some(p) => b.arg(p),
            None => b.arg(&null),
        };
        b.arg(&mut out).arg(&v);
        // SAFETY: argument types match the kernel; a null parameter pointer means greedy.
        unsafe { b.launch(cfg((batch as u32, 1, 1), SAMPLE_THREADS)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(batch)))
}

/// `indus_exp` of every element of a contiguous f32 tensor.
pub(crate) fn fma_exp(s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let op = "fma-exp";
    if !matches!(s.slice, CudaStorageSlice::F32(_)) {
        candle_core::bail!("{op}: input must be f32");
    }
    let n = l.shape().elem_count();
    let dev = s.device.clone();
    let x = view::<f32>(s, l, op)?;
    let mut out = alloc::<f32>(&dev, n)?;
    if n > 0 {
        let f = func(&dev, Module::Sampling, "fma_exp_f32")?;
        let threads = 256u32;
        let blocks = n.div_ceil(threads as usize);
        if blocks > u32::MAX as usize {
            candle_core::bail!("{op}: {n} elements is too many for one launch");
        }
        let nn = n as i64;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&mut out).arg(&nn);
        // SAFETY: argument types match the kernel; threads past n return.
        unsafe { b.launch(cfg((blocks as u32, 1, 1), threads)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), l.shape().clone()))
}
