//! `cuda_fwd` bodies of the small ops: cache write, RMSNorm (plain and fused with the residual add), rotary,
//! SiLU·mul. Each checks shapes like its CPU twin, picks the 16-byte vectorised kernel when sizes and offsets
//! allow it (the `_scalar` variant otherwise) and launches on candle's stream.

use super::{KernelType, Module, alloc, cfg, func, threads_for, view, wrap};
use crate::kv_layout::KvCacheShape;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use half::{bf16, f16};

fn suffix<T: KernelType>(vectorised: bool) -> String {
    if vectorised {
        T::SUFFIX.to_string()
    } else {
        format!("{}_scalar", T::SUFFIX)
    }
}

macro_rules! by_dtype {
    ($dtype:expr, $op:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::BF16 => $f::<bf16>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            other => candle_core::bail!("{}: unsupported dtype {other:?} on CUDA", $op),
        }
    };
}

// ---------------------------------------------------------------------------------------------- cache write

pub(crate) fn write_kv_cache(
    cache: &mut CudaStorage,
    cache_l: &Layout,
    new: &CudaStorage,
    new_l: &Layout,
    slots: &CudaStorage,
    slots_l: &Layout,
) -> Result<()> {
    let op = "write-kv-cache";
    if !cache_l.is_contiguous() || cache_l.start_offset() != 0 {
        candle_core::bail!("{op}: cache must be a whole contiguous tensor");
    }
    let shape = KvCacheShape::from_dims(cache_l.dims())?;
    if !matches!(slots.slice, CudaStorageSlice::I64(_)) {
        candle_core::bail!("{op}: slot mapping must be i64 on CUDA");
    }
    if cache.dtype() != new.dtype() {
        candle_core::bail!("{op}: new {:?} vs cache {:?}", new.dtype(), cache.dtype());
    }
    let num_tokens = slots_l.shape().elem_count();
    let per_token = shape.num_kv_heads * shape.head_size;
    if new_l.shape().elem_count() != num_tokens * per_token {
        candle_core::bail!(
            "{op}: {} values for {num_tokens} slots",
            new_l.shape().elem_count()
        );
    }
    if num_tokens == 0 {
        return Ok(());
    }
    let slots = view::<i64>(slots, slots_l, op)?;
    let dev = cache.device().clone();
    fn go<T: KernelType>(
        dev: &CudaDevice,
        cache: &mut CudaStorage,
        new: &CudaStorage,
        new_l: &Layout,
        slots: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, i64>,
        shape: KvCacheShape,
        num_tokens: usize,
    ) -> Result<()> {
        let src = view::<T>(new, new_l, "write-kv-cache")?;
        let vec =
            shape.head_size.is_multiple_of(T::VEC) && new_l.start_offset().is_multiple_of(T::VEC);
        let f = func(
            dev,
            Module::CacheWrite,
            &format!("reshape_and_cache_{}", suffix::<T>(vec)),
        )?;
        let per_token = shape.num_kv_heads * shape.head_size;
        let units = per_token / if vec { T::VEC } else { 1 };
        let (kvh, hs, bs) = (
            shape.num_kv_heads as i32,
            shape.head_size as i32,
            shape.block_size as i32,
        );
        let cap = (shape.num_blocks * shape.block_size) as i64;
        let dst = cache.as_cuda_slice_mut::<T>()?;
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&src)
            .arg(dst)
            .arg(slots)
            .arg(&kvh)
            .arg(&hs)
            .arg(&bs)
            .arg(&cap);
        // SAFETY: argument types match the kernel's signature; every index is bounds-checked in the kernel.
        unsafe { b.launch(cfg((num_tokens as u32, 1, 1), threads_for(units, 512))) }.w()?;
        Ok(())
    }
    by_dtype!(
        cache.dtype(),
        op,
        go(&dev, cache, new, new_l, &slots, shape, num_tokens)
    )
}

// ---------------------------------------------------------------------------------------------- norms

fn row_dims(x_l: &Layout, w_l: &Layout, op: &str) -> Result<(usize, usize)> {
    let dim = w_l.shape().elem_count();
    let n = x_l.shape().elem_count();
    if dim == 0 || !n.is_multiple_of(dim) || x_l.dims().last() != Some(&dim) {
        candle_core::bail!(
            "{op}: weight of {dim} does not match input {:?}",
            x_l.dims()
        );
    }
    Ok((n / dim, dim))
}

pub(crate) fn rms_norm(
    x: &CudaStorage,
    x_l: &Layout,
    w: &CudaStorage,
    w_l: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let op = "rms-norm";
    let (rows, dim) = row_dims(x_l, w_l, op)?;
    if x.dtype() != w.dtype() {
        candle_core::bail!("{op}: x {:?} vs weight {:?}", x.dtype(), w.dtype());
    }
    let dev = x.device().clone();
    #[allow(clippy::too_many_arguments)]
    fn go<T: KernelType>(
        dev: &CudaDevice,
        x: &CudaStorage,
        x_l: &Layout,
        w: &CudaStorage,
        w_l: &Layout,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<CudaStorage> {
        let op = "rms-norm";
        let (xv, wv) = (view::<T>(x, x_l, op)?, view::<T>(w, w_l, op)?);
        let vec = dim.is_multiple_of(T::VEC)
            && x_l.start_offset().is_multiple_of(T::VEC)
            && w_l.start_offset().is_multiple_of(T::VEC);
        let mut out = alloc::<T>(dev, rows * dim)?;
        if rows > 0 {
            let f = func(dev, Module::Norm, &format!("rms_norm_{}", suffix::<T>(vec)))?;
            let d = dim as i32;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&xv).arg(&wv).arg(&mut out).arg(&d).arg(&eps);
            let units = dim / if vec { T::VEC } else { 1 };
            // SAFETY: argument types match the kernel; the grid covers exactly `rows` rows.
            unsafe { b.launch(cfg((rows as u32, 1, 1), threads_for(units, 1024))) }.w()?;
        }
        Ok(wrap(dev, out))
    }
    let s = by_dtype!(x.dtype(), op, go(&dev, x, x_l, w, w_l, rows, dim, eps))?;
    Ok((s, x_l.shape().clone()))
}

/// Output: `[2, ...x's shape]`, normed rows then the new residual stream.
pub(crate) fn fused_add_rms_norm(
    x: &CudaStorage,
    x_l: &Layout,
    r: &CudaStorage,
    r_l: &Layout,
    w: &CudaStorage,
    w_l: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    let op = "fused-add-rms-norm";
    let (rows, dim) = row_dims(x_l, w_l, op)?;
    if x_l.dims() != r_l.dims() {
        candle_core::bail!("{op}: x {:?} vs residual {:?}", x_l.dims(), r_l.dims());
    }
    if x.dtype() != w.dtype() || x.dtype() != r.dtype() {
        candle_core::bail!("{op}: x, residual and weight must share a dtype");
    }
    let dev = x.device().clone();
    #[allow(clippy::too_many_arguments)]
    fn go<T: KernelType>(
        dev: &CudaDevice,
        x: &CudaStorage,
        x_l: &Layout,
        r: &CudaStorage,
        r_l: &Layout,
        w: &CudaStorage,
        w_l: &Layout,
        rows: usize,
        dim: usize,
        eps: f32,
    ) -> Result<CudaStorage> {
        let op = "fused-add-rms-norm";
        let (xv, rv, wv) = (
            view::<T>(x, x_l, op)?,
            view::<T>(r, r_l, op)?,
            view::<T>(w, w_l, op)?,
        );
        let vec = dim.is_multiple_of(T::VEC)
            && [x_l, r_l, w_l]
                .iter()
                .all(|l| l.start_offset().is_multiple_of(T::VEC));
        let mut out = alloc::<T>(dev, 2 * rows * dim)?;
        if rows > 0 {
            let f = func(
                dev,
                Module::Norm,
                &format!("fused_add_rms_norm_{}", suffix::<T>(vec)),
            )?;
            let (nr, d) = (rows as i32, dim as i32);
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&xv)
                .arg(&rv)
                .arg(&wv)
                .arg(&mut out)
                .arg(&nr)
                .arg(&d)
                .arg(&eps);
            let units = dim / if vec { T::VEC } else { 1 };
            // SAFETY: argument types match the kernel; `out` holds 2 * rows * dim elements.
            unsafe { b.launch(cfg((rows as u32, 1, 1), threads_for(units, 1024))) }.w()?;
        }
        Ok(wrap(dev, out))
    }
    let s = by_dtype!(
        x.dtype(),
        op,
        go(&dev, x, x_l, r, r_l, w, w_l, rows, dim, eps)
    )?;
    let mut dims = vec![2];
    dims.extend_from_slice(x_l.dims());
    Ok((s, Shape::from(dims)))
}

// ---------------------------------------------------------------------------------------------- rotary

pub(crate) fn rotary(
    x: &CudaStorage,
    x_l: &Layout,
    cos: &CudaStorage,
    cos_l: &Layout,
    sin: &CudaStorage,
    sin_l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let op = "rotary-neox";
    let (tokens, heads, hs) = match x_l.dims() {
        &[t, h, d] => (t, h, d),
        _ => candle_core::bail!("{op}: x must be [tokens, heads, head_size]"),
    };
    let stride = x_l.stride();
    if stride[2] != 1 && hs > 1 {
        candle_core::bail!("{op}: x must have unit stride inside a head");
    }
    let half = hs / 2;
    if !hs.is_multiple_of(2)
        || cos_l.shape().elem_count() != tokens * half
        || sin_l.shape().elem_count() != tokens * half
    {
        candle_core::bail!("{op}: cos/sin must be [tokens, head_size/2]");
    }
    if !matches!(cos.slice, CudaStorageSlice::F32(_))
        || !matches!(sin.slice, CudaStorageSlice::F32(_))
    {
        candle_core::bail!("{op}: cos/sin must be f32");
    }
    let (cv, sv) = (view::<f32>(cos, cos_l, op)?, view::<f32>(sin, sin_l, op)?);
    let dev = x.device().clone();
    #[allow(clippy::too_many_arguments)]
    fn go<T: KernelType>(
        dev: &CudaDevice,
        x: &CudaStorage,
        x_l: &Layout,
        cv: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>,
        sv: &candle_core::cuda_backend::cudarc::driver::CudaView<'_, f32>,
        offsets: (usize, usize),
        dims: (usize, usize, usize),
    ) -> Result<CudaStorage> {
        let (tokens, heads, hs) = dims;
        let half = hs / 2;
        let stride = x_l.stride();
        let (st, sh) = (stride[0], stride[1]);
        let xo = x_l.start_offset();
        let xs = x.as_cuda_slice::<T>()?.slice(xo..);
        let vec = half.is_multiple_of(T::VEC)
            && st.is_multiple_of(T::VEC)
            && sh.is_multiple_of(T::VEC)
            && xo.is_multiple_of(T::VEC)
            && offsets.0.is_multiple_of(T::VEC)
            && offsets.1.is_multiple_of(T::VEC);
        let mut out = alloc::<T>(dev, tokens * heads * hs)?;
        if tokens > 0 && heads > 0 && half > 0 {
            let f = func(
                dev,
                Module::Rotary,
                &format!("rotary_neox_{}", suffix::<T>(vec)),
            )?;
            let (h, d, st, sh) = (heads as i32, hs as i32, st as i64, sh as i64);
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&xs)
                .arg(cv)
                .arg(sv)
                .arg(&mut out)
                .arg(&h)
                .arg(&d)
                .arg(&st)
                .arg(&sh);
            let units = heads * half / if vec { T::VEC } else { 1 };
            // SAFETY: argument types match the kernel; reads stay inside x's view (strides from its layout).
            unsafe { b.launch(cfg((tokens as u32, 1, 1), threads_for(units, 512))) }.w()?;
        }
        Ok(wrap(dev, out))
    }
    let s = by_dtype!(
        x.dtype(),
        op,
        go(
            &dev,
            x,
            x_l,
            &cv,
            &sv,
            (cos_l.start_offset(), sin_l.start_offset()),
            (tokens, heads, hs)
        )
    )?;
    Ok((s, Shape::from((tokens, heads, hs))))
}

// ---------------------------------------------------------------------------------------------- SiLU·mul

pub(crate) fn silu_mul(x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
    let op = "silu-mul";
    let (rows, width) = match l.dims() {
        &[r, w] if w.is_multiple_of(2) => (r, w),
        d => candle_core::bail!("{op}: input must be [tokens, 2 * inter], got {d:?}"),
    };
    let inter = width / 2;
    let dev = x.device().clone();
    fn go<T: KernelType>(
        dev: &CudaDevice,
        x: &CudaStorage,
        l: &Layout,
        rows: usize,
        inter: usize,
    ) -> Result<CudaStorage> {
        let xv = view::<T>(x, l, "silu-mul")?;
        let vec = inter.is_multiple_of(T::VEC) && l.start_offset().is_multiple_of(T::VEC);
        let mut out = alloc::<T>(dev, rows * inter)?;
        if rows > 0 && inter > 0 {
            let f = func(
                dev,
                Module::Activation,
                &format!("silu_mul_{}", suffix::<T>(vec)),
            )?;
            let per = if vec { T::VEC } else { 1 };
            let threads = threads_for(inter / per, 256);
            let chunks = (inter / per).div_ceil(threads as usize) as u32;
            let n = inter as i32;
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&xv).arg(&mut out).arg(&n);
            // SAFETY: argument types match the kernel; threads past `inter` return early.
            unsafe { b.launch(cfg((rows as u32, chunks, 1), threads)) }.w()?;
        }
        Ok(wrap(dev, out))
    }
    let s = by_dtype!(x.dtype(), op, go(&dev, x, l, rows, inter))?;
    Ok((s, Shape::from((rows, inter))))
}
