//! `cuda_fwd` of the sampler: one CTA of 1024 threads per row (kernels/cuda/sampling.cu).

use super::{Module, alloc, cfg, func, view};
use crate::sampling::SamplingRow;
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
        let params = match rows {
            Some(r) => Some(dev.clone_htod(r)?),
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
        unsafe { b.launch(cfg((batch as u32, 1, 1), 1024)) }.w()?;
    }
    Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(batch)))
}
