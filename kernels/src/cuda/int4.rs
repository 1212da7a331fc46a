//! Launches of kernels/cuda/int4_matmul.cu (W4A16). See [`crate::int4_matmul`] for the layout and the
//! reference. At most `INT4_M_TILES`' last rows: the small-batch kernel over `ceil(N/128) × ceil(K/256)` CTAs
//! (split-K into a zeroed f32 buffer, then one pass converts it to x's dtype, unless K fits one slice); more
//! rows: the weight dequantized to a dense `[K, N]` and multiplied by cuBLAS through candle.

use super::{Held, KernelType, Module, alloc, cfg, func, view, wrap};
use crate::int4_matmul::Int4Matrix;
use crate::shared::{INT4_K_CHUNK, INT4_M_TILES, INT4_THREADS};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor,
};
use half::{bf16, f16};

/// `x [M, K]` (contiguous, on the GPU) times the weight's transpose: `[M, N]` in x's dtype.
pub(crate) fn matmul(x: &Tensor, w: &Int4Matrix<'_>) -> Result<Tensor> {
    let m = x.dims()[0];
    // The kernels read f16 scales (GPTQ's and AWQ's dtype); another dtype is converted per call.
    let scales = w.scales.to_dtype(DType::F16)?.contiguous()?;
    let qweight = w.qweight.contiguous()?;
    let qzeros = w.qzeros.contiguous()?;
    let g_idx = w.g_idx.map(Tensor::contiguous).transpose()?;
    let parts = Parts {
        k: w.k,
        n: w.n,
        group_size: w.group_size.unwrap_or(0) as i32,
        zero_offset: i32::from(w.zero_offset),
        qweight: &qweight,
        qzeros: &qzeros,
        scales: &scales,
        g_idx: g_idx.as_ref(),
    };
    if m <= INT4_M_TILES[INT4_M_TILES.len() - 1] {
        x.apply_op1_no_bwd(&Gemv(parts))
    } else {
        let wt = qweight.apply_op1_no_bwd(&Dequant {
            parts,
            dtype: x.dtype(),
        })?;
        x.matmul(&wt)
    }
}

#[derive(Clone, Copy)]
struct Parts<'a> {
    k: usize,
    n: usize,
    group_size: i32,
    zero_offset: i32,
    qweight: &'a Tensor,
    qzeros: &'a Tensor,
    scales: &'a Tensor,
    g_idx: Option<&'a Tensor>,
}

struct Gemv<'a>(Parts<'a>);

impl CustomOp1 for Gemv<'_> {
    fn name(&self) -> &'static str {
        "int4-gemv"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("int4-gemv runs on CUDA only (the CPU path is int4_matmul's reference)")
    }

    fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let p = &self.0;
        let m = l.dims()[0];
        let dev = x.device().clone();
        fn go<T: KernelType>(
            dev: &CudaDevice,
            x: &CudaStorage,
            l: &Layout,
            p: &Parts<'_>,
            m: usize,
        ) -> Result<CudaStorage> {
            let (k, n) = (p.k, p.n);
            let xv = view::<T>(x, l, "int4-gemv x")?;
            let (qw, qz, sc) = (Held::of(p.qweight), Held::of(p.qzeros), Held::of(p.scales));
            let gi = p.g_idx.map(Held::of);
            let qwv = qw.view::<i32>("int4 matmul: qweight")?;
            let qzv = qz.view::<i32>("int4 matmul: qzeros")?;
            let scv = sc.view::<f16>("int4 matmul: scales")?;
            let giv = gi
                .as_ref()
                .map(|g| g.view::<i32>("int4 matmul: g_idx"))
                .transpose()?;
            let mut y = alloc::<T>(dev, m * n)?;
            if m == 0 || n == 0 || k == 0 {
                return Ok(wrap(dev, y));
            }
            let tile = INT4_M_TILES
                .iter()
                .copied()
                .find(|&t| t >= m)
                .ok_or_else(|| candle_core::Error::Msg(format!("int4-gemv: {m} rows")))?;
            let slices = k.div_ceil(INT4_K_CHUNK);
            let mut part = dev.alloc_zeros::<f32>(if slices > 1 { m * n } else { 1 })?;
            let f = func(
                dev,
                Module::Int4Matmul,
                &format!("int4_gemv_{}_m{tile}", T::SUFFIX),
            )?;
            let grid = (n.div_ceil(INT4_THREADS as usize) as u32, slices as u32, 1);
            let (mi, ki, ni) = (m as i32, k as i32, n as i32);
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&mut y)
                .arg(&mut part)
                .arg(&xv)
                .arg(&qwv)
                .arg(&qzv)
                .arg(&scv);
            // A null g_idx is "no act-order": the kernel derives the group from k.
            let null: u64 = 0;
            match &giv {
                Some(g) => b.arg(g),
                None => b.arg(&null),
            };
            b.arg(&mi)
                .arg(&ki)
                .arg(&ni)
                .arg(&p.group_size)
                .arg(&p.zero_offset);
            // SAFETY: argument types and sizes match the kernel; the grid covers N (threads past it return) and K
            // (one slice per CTA row), every index stays inside the checked shapes.
            unsafe { b.launch(cfg(grid, INT4_THREADS)) }.w()?;
            if slices > 1 {
                let fin = func(
                    dev,
                    Module::Int4Matmul,
                    &format!("int4_finish_{}", T::SUFFIX),
                )?;
                let count = (m * n) as i32;
                let mut b = stream.launch_builder(&fin);
                b.arg(&mut y).arg(&part).arg(&count);
                // SAFETY: `part` and `y` hold m * n elements; threads past `count` return.
                unsafe { b.launch(cfg(((m * n).div_ceil(256) as u32, 1, 1), 256)) }.w()?;
            }
            Ok(wrap(dev, y))
        }
        let s = match x.dtype() {
            DType::F32 => go::<f32>(&dev, x, l, p, m),
            DType::BF16 => go::<bf16>(&dev, x, l, p, m),
            DType::F16 => go::<f16>(&dev, x, l, p, m),
            other => candle_core::bail!("int4-gemv: unsupported activation dtype {other:?}"),
        }?;
        Ok((s, Shape::from((m, p.n))))
    }
}

/// The dense `Wᵀ` `[K, N]` in `dtype`; applied to `qweight`.
struct Dequant<'a> {
    parts: Parts<'a>,
    dtype: DType,
}

impl CustomOp1 for Dequant<'_> {
    fn name(&self) -> &'static str {
        "int4-dequantize"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "int4-dequantize runs on CUDA only (the CPU path is int4_matmul's reference)"
        )
    }

    fn cuda_fwd(&self, qw: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let p = &self.parts;
        let dev = qw.device().clone();
        fn go<T: KernelType>(
            dev: &CudaDevice,
            qw: &CudaStorage,
            l: &Layout,
            p: &Parts<'_>,
        ) -> Result<CudaStorage> {
            let (k, n) = (p.k, p.n);
            let qwv = view::<i32>(qw, l, "qweight")?;
            let (qz, sc) = (Held::of(p.qzeros), Held::of(p.scales));
            let gi = p.g_idx.map(Held::of);
            let qzv = qz.view::<i32>("int4 matmul: qzeros")?;
            let scv = sc.view::<f16>("int4 matmul: scales")?;
            let giv = gi
                .as_ref()
                .map(|g| g.view::<i32>("int4 matmul: g_idx"))
                .transpose()?;
            let mut wt = alloc::<T>(dev, k * n)?;
            if k == 0 || n == 0 {
                return Ok(wrap(dev, wt));
            }
            let f = func(
                dev,
                Module::Int4Matmul,
                &format!("int4_dequant_{}", T::SUFFIX),
            )?;
            let grid = (n.div_ceil(INT4_THREADS as usize) as u32, (k / 8) as u32, 1);
            let (ki, ni) = (k as i32, n as i32);
            let stream = dev.cuda_stream();
            let mut b = stream.launch_builder(&f);
            b.arg(&mut wt).arg(&qwv).arg(&qzv).arg(&scv);
            let null: u64 = 0;
            match &giv {
                Some(g) => b.arg(g),
                None => b.arg(&null),
            };
            b.arg(&ki).arg(&ni).arg(&p.group_size).arg(&p.zero_offset);
            // SAFETY: argument types match the kernel; one thread per packed word, threads past N return.
            unsafe { b.launch(cfg(grid, INT4_THREADS)) }.w()?;
            Ok(wrap(dev, wt))
        }
        let s = match self.dtype {
            DType::F32 => go::<f32>(&dev, qw, l, p),
            DType::BF16 => go::<bf16>(&dev, qw, l, p),
            DType::F16 => go::<f16>(&dev, qw, l, p),
            other => candle_core::bail!("int4-dequantize: unsupported dtype {other:?}"),
        }?;
        Ok((s, Shape::from((p.k, p.n))))
    }
}
