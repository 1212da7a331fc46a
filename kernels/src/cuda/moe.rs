//! Launches of kernels/cuda/moe.cu: the grouped mixture-of-experts feed-forward in three launches (gate/up with
//! the gather and SwiGLU fused, down, the weighted combine), over the tiles of a [`MoePlan`].

use super::{Held, KernelType, Module, alloc, cfg, func, view, wrap};
use crate::moe::{ExpertWeights, MoePlan};
use crate::shared::{MOE_BN, MOE_THREADS};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor,
};
use half::{bf16, f16};

/// `x [tokens, hidden]` through each token's `k` experts; `weights [tokens, k]`. Shapes were checked by the caller.
pub(crate) fn grouped(
    x: &Tensor,
    plan: &MoePlan,
    weights: &Tensor,
    k: usize,
    w: &ExpertWeights<'_>,
) -> Result<Tensor> {
    let dev = x.device();
    let dtype = x.dtype();
    let u32s = |v: &[u32]| Tensor::from_slice(v, v.len(), dev);
    let op = Grouped {
        gate_up: &w.gate_up.to_dtype(dtype)?.contiguous()?,
        down: &w.down.to_dtype(dtype)?.contiguous()?,
        weights: &weights.to_dtype(DType::F32)?.contiguous()?,
        slot_token: &u32s(&plan.slot_token)?,
        slot_of: &u32s(&plan.slot_of)?,
        tile_expert: &u32s(&plan.tile_expert)?,
        tile_start: &u32s(&plan.tile_start)?,
        tile_len: &u32s(&plan.tile_len)?,
        tiles: plan.tile_len.len(),
        k,
    };
    x.contiguous()?.apply_op1_no_bwd(&op)
}

struct Grouped<'a> {
    gate_up: &'a Tensor,
    down: &'a Tensor,
    weights: &'a Tensor,
    slot_token: &'a Tensor,
    slot_of: &'a Tensor,
    tile_expert: &'a Tensor,
    tile_start: &'a Tensor,
    tile_len: &'a Tensor,
    tiles: usize,
    k: usize,
}

impl CustomOp1 for Grouped<'_> {
    fn name(&self) -> &'static str {
        "moe-grouped"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "moe-grouped runs on CUDA only (elsewhere fused_moe takes the expert GEMMs)"
        )
    }

    fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (tokens, hidden) = l.shape().dims2()?;
        if tokens > 65_535 {
            candle_core::bail!(
                "moe-grouped: {tokens} tokens in one call (at most 65535, a grid dimension)"
            );
        }
        let dev = x.device().clone();
        let s = match x.dtype() {
            DType::F32 => self.go::<f32>(&dev, x, l, tokens, hidden),
            DType::BF16 => self.go::<bf16>(&dev, x, l, tokens, hidden),
            DType::F16 => self.go::<f16>(&dev, x, l, tokens, hidden),
            other => candle_core::bail!("moe-grouped: unsupported dtype {other:?}"),
        }?;
        Ok((s, Shape::from((tokens, hidden))))
    }
}

impl Grouped<'_> {
    fn go<T: KernelType>(
        &self,
        dev: &CudaDevice,
        x: &CudaStorage,
        l: &Layout,
        tokens: usize,
        hidden: usize,
    ) -> Result<CudaStorage> {
        let inter = self.down.dims()[2];
        let slots = tokens * self.k;
        let mut out = alloc::<T>(dev, tokens * hidden)?;
        if self.tiles == 0 || hidden == 0 {
            return Ok(wrap(dev, out));
        }
        let xv = view::<T>(x, l, "moe x")?;
        let held = [
            self.gate_up,
            self.down,
            self.weights,
            self.slot_token,
            self.slot_of,
            self.tile_expert,
            self.tile_start,
            self.tile_len,
        ]
        .map(Held::of);
        let [gu, dn, wt, st, so, te, ts, tl] = &held;
        let (guv, dnv) = (gu.view::<T>("moe gate_up")?, dn.view::<T>("moe down")?);
        let wv = wt.view::<f32>("moe weights")?;
        let (stv, sov) = (st.view::<u32>("moe plan")?, so.view::<u32>("moe plan")?);
        let (tev, tsv, tlv) = (
            te.view::<u32>("moe plan")?,
            ts.view::<u32>("moe plan")?,
            tl.view::<u32>("moe plan")?,
        );
        let (h, i, t, k) = (hidden as i32, inter as i32, tokens as i32, self.k as i32);
        let tiles = self.tiles as u32;
        let stream = dev.cuda_stream();

        let mut act = alloc::<T>(dev, slots * inter)?;
        let f = func(dev, Module::Moe, &format!("moe_gate_up_{}", T::SUFFIX))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&mut act)
            .arg(&xv)
            .arg(&guv)
            .arg(&stv)
            .arg(&tev)
            .arg(&tsv)
            .arg(&tlv)
            .arg(&h)
            .arg(&i);
        // SAFETY: argument types match the kernel; every tile lies inside the plan's slots, every slot's token
        // inside x, every column guard inside [0, I).
        unsafe { b.launch(cfg((inter.div_ceil(MOE_BN) as u32, tiles, 1), MOE_THREADS)) }.w()?;

        let mut y = alloc::<f32>(dev, slots * hidden)?;
        let f = func(dev, Module::Moe, &format!("moe_down_{}", T::SUFFIX))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&mut y)
            .arg(&act)
            .arg(&dnv)
            .arg(&tev)
            .arg(&tsv)
            .arg(&tlv)
            .arg(&h)
            .arg(&i);
        // SAFETY: as above, columns inside [0, H); every slot is written by exactly one tile.
        unsafe { b.launch(cfg((hidden.div_ceil(MOE_BN) as u32, tiles, 1), MOE_THREADS)) }.w()?;

        let f = func(dev, Module::Moe, &format!("moe_combine_{}", T::SUFFIX))?;
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out)
            .arg(&y)
            .arg(&sov)
            .arg(&wv)
            .arg(&t)
            .arg(&k)
            .arg(&h);
        // SAFETY: one thread per output element; slot_of maps every choice to a written slot of y.
        unsafe { b.launch(cfg((hidden.div_ceil(256) as u32, tokens as u32, 1), 256)) }.w()?;
        Ok(wrap(dev, out))
    }
}
