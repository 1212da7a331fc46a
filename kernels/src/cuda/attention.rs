//! `cuda_fwd` of paged attention: follows [`plan_attention`] — the tensor-core prefill kernel for sequences with
//! several query tokens (bf16/f16, head size 64/128), the decode/general kernel for the rest (optionally split-K
//! with its reduce kernel). Each takes the layer's [`crate::AttentionVariant`]: a sliding window (0: none) and a
//! score soft-cap (0: none, else `cap · log2 e`, the kernels' score domain).

use super::{KernelType, Module, U32Arg, alloc, cfg, func, sm_count, view, wrap};
use crate::kv_layout::KvCacheShape;
use crate::metadata::{DeviceAttentionMetadata, HostAttentionMetadata};
use crate::paged_attention::{AttentionPlan, PagedAttention, plan_attention};
use crate::shared::{DECODE_THREADS, PREFILL_BM, PREFILL_THREADS};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::WrapErr;
use candle_core::cuda_backend::cudarc::driver::{CudaView, PushKernelArg};
use candle_core::{CudaDevice, CudaStorage, DType, Device, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

const OP: &str = "paged-attention";

/// Uploads the host metadata when the caller built [`crate::AttentionMetadata`] without device copies.
fn upload(host: &HostAttentionMetadata, dev: &CudaDevice) -> Result<DeviceAttentionMetadata> {
    let d = Device::Cuda(dev.clone());
    let n = host.num_seqs();
    Ok(DeviceAttentionMetadata {
        block_tables: Tensor::from_slice(&host.block_tables, (n, host.max_blocks_per_seq), &d)?,
        context_lens: Tensor::new(host.context_lens.as_slice(), &d)?,
        query_start_loc: Tensor::new(host.query_start_loc.as_slice(), &d)?,
    })
}

struct Dims {
    num_tokens: usize,
    num_heads: usize,
    head_size: usize,
    shape: KvCacheShape,
    num_seqs: usize,
    max_blocks: usize,
}

pub(crate) fn forward(
    op: &PagedAttention,
    q: &CudaStorage,
    q_l: &Layout,
    k: &CudaStorage,
    k_l: &Layout,
    v: &CudaStorage,
    v_l: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let shape = KvCacheShape::from_dims(k_l.dims())?;
    if v_l.dims() != k_l.dims() {
        candle_core::bail!("{OP}: key and value caches differ in shape");
    }
    for (l, what) in [(k_l, "key cache"), (v_l, "value cache")] {
        if !l.is_contiguous() || l.start_offset() != 0 {
            candle_core::bail!("{OP}: the {what} must be a whole contiguous tensor");
        }
    }
    if q.dtype() != k.dtype() || q.dtype() != v.dtype() {
        candle_core::bail!("{OP}: q {:?} vs caches {:?}", q.dtype(), k.dtype());
    }
    let (num_tokens, num_heads, head_size) = match q_l.dims() {
        &[t, h, d] => (t, h, d),
        _ => candle_core::bail!("{OP}: q must be [tokens, heads, head_size]"),
    };
    if head_size != shape.head_size || num_heads % shape.num_kv_heads != 0 {
        candle_core::bail!("{OP}: q {:?} incompatible with cache {shape:?}", q_l.dims());
    }
    let host = &op.meta;
    if num_tokens != host.num_tokens() {
        candle_core::bail!(
            "{OP}: {num_tokens} query tokens, metadata has {}",
            host.num_tokens()
        );
    }
    if !q_l.start_offset().is_multiple_of(8) {
        candle_core::bail!("{OP}: q must start on a 16-byte boundary");
    }
    let dev = q.device().clone();
    let plan = plan_attention(
        host,
        q.dtype(),
        num_heads,
        shape.num_kv_heads,
        head_size,
        sm_count(&dev)?,
        op.options,
    )?;
    let uploaded;
    let meta = match &op.device {
        Some(m) => m,
        None => {
            uploaded = upload(host, &dev)?;
            &uploaded
        }
    };
    let bt = U32Arg::of(&meta.block_tables, "block_tables")?;
    let cl = U32Arg::of(&meta.context_lens, "context_lens")?;
    let qsl = U32Arg::of(&meta.query_start_loc, "query_start_loc")?;
    let dims = Dims {
        num_tokens,
        num_heads,
        head_size,
        shape,
        num_seqs: host.num_seqs(),
        max_blocks: host.max_blocks_per_seq,
    };
    let args = MetaViews {
        bt: bt.view()?,
        cl: cl.view()?,
        qsl: qsl.view()?,
    };
    let variant = VariantArgs::of(op)?;
    let s = match q.dtype() {
        DType::F32 => launch::<f32>(&dev, op.scale, variant, &plan, &dims, &args, (q, q_l), k, v)?,
        DType::BF16 => {
            launch::<bf16>(&dev, op.scale, variant, &plan, &dims, &args, (q, q_l), k, v)?
        }
        DType::F16 => launch::<f16>(&dev, op.scale, variant, &plan, &dims, &args, (q, q_l), k, v)?,
        other => candle_core::bail!("{OP}: unsupported dtype {other:?} on CUDA"),
    };
    Ok((s, q_l.shape().clone()))
}

/// The variant as the kernels take it: `window` 0 for none, `softcap_log2` 0 for none.
#[derive(Clone, Copy)]
struct VariantArgs {
    window: i32,
    softcap_log2: f32,
}

impl VariantArgs {
    fn of(op: &PagedAttention) -> Result<Self> {
        let window = match op.variant.window {
            None => 0,
            Some(w) => i32::try_from(w)
                .map_err(|_| candle_core::Error::Msg(format!("{OP}: window {w} too large")))?,
        };
        let softcap_log2 = match op.variant.softcap {
            None => 0.0,
            Some(c) if c > 0.0 && c.is_finite() => c * std::f32::consts::LOG2_E,
            Some(c) => candle_core::bail!("{OP}: soft-cap {c} must be positive and finite"),
        };
        Ok(Self {
            window,
            softcap_log2,
        })
    }
}

struct MetaViews<'a> {
    bt: CudaView<'a, u32>,
    cl: CudaView<'a, u32>,
    qsl: CudaView<'a, u32>,
}

#[allow(clippy::too_many_arguments)]
fn launch<T: KernelType>(
    dev: &CudaDevice,
    scale: f32,
    variant: VariantArgs,
    plan: &AttentionPlan,
    d: &Dims,
    m: &MetaViews<'_>,
    (q, q_l): (&CudaStorage, &Layout),
    k: &CudaStorage,
    v: &CudaStorage,
) -> Result<CudaStorage> {
    let qv = view::<T>(q, q_l, OP)?;
    let kv = k.as_cuda_slice::<T>()?;
    let vv = v.as_cuda_slice::<T>()?;
    let mut out = alloc::<T>(dev, d.num_tokens * d.num_heads * d.head_size)?;
    if d.num_tokens == 0 || d.num_seqs == 0 {
        return Ok(wrap(dev, out));
    }
    let stream = dev.cuda_stream();
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    let VariantArgs {
        window,
        softcap_log2,
    } = variant;
    let (ns, nh, nkv, bs, mb) = (
        d.num_seqs as i32,
        d.num_heads as i32,
        d.shape.num_kv_heads as i32,
        d.shape.block_size as i32,
        d.max_blocks as i32,
    );
    if plan.prefill {
        let f = func(
            dev,
            Module::PagedAttention,
            &format!("paged_attention_prefill_{}_d{}", T::SUFFIX, d.head_size),
        )?;
        let tiles = (d.num_tokens / PREFILL_BM + d.num_seqs) as u32;
        let skip_single = plan.general as i32;
        let mut b = stream.launch_builder(&f);
        b.arg(&mut out)
            .arg(&qv)
            .arg(kv)
            .arg(vv)
            .arg(&m.bt)
            .arg(&m.cl)
            .arg(&m.qsl)
            .arg(&ns)
            .arg(&nh)
            .arg(&nkv)
            .arg(&bs)
            .arg(&mb)
            .arg(&scale_log2)
            .arg(&skip_single)
            .arg(&window)
            .arg(&softcap_log2);
        // SAFETY: argument types match the kernel; metadata was validated against the cache shape.
        unsafe { b.launch(cfg((tiles, d.num_heads as u32, 1), PREFILL_THREADS)) }.w()?;
    }
    if plan.general {
        let f = func(
            dev,
            Module::PagedAttention,
            &format!(
                "paged_attention_decode_{}_d{}_g{}",
                T::SUFFIX,
                d.head_size,
                plan.group_max
            ),
        )?;
        let grid = (
            d.num_tokens as u32,
            (d.shape.num_kv_heads * plan.head_chunks) as u32,
            plan.partitions as u32,
        );
        let only_single = plan.only_single as i32;
        if plan.partitions == 1 {
            let (null, part) = (0u64, 0i32);
            let mut b = stream.launch_builder(&f);
            b.arg(&mut out)
                .arg(&null)
                .arg(&null)
                .arg(&qv)
                .arg(kv)
                .arg(vv)
                .arg(&m.bt)
                .arg(&m.cl)
                .arg(&m.qsl)
                .arg(&ns)
                .arg(&nh)
                .arg(&nkv)
                .arg(&bs)
                .arg(&mb)
                .arg(&scale_log2)
                .arg(&part)
                .arg(&only_single)
                .arg(&window)
                .arg(&softcap_log2);
            // SAFETY: argument types match the kernel (null partial buffers are never touched without a split).
            unsafe { b.launch(cfg(grid, DECODE_THREADS)) }.w()?;
        } else {
            let rows = d.num_tokens * d.num_heads * plan.partitions;
            let mut part_acc = alloc::<f32>(dev, rows * d.head_size)?;
            let mut part_ml = alloc::<f32>(dev, rows * 2)?;
            let (psize, nparts) = (plan.partition_size as i32, plan.partitions as i32);
            let mut b = stream.launch_builder(&f);
            b.arg(&mut out)
                .arg(&mut part_acc)
                .arg(&mut part_ml)
                .arg(&qv)
                .arg(kv)
                .arg(vv)
                .arg(&m.bt)
                .arg(&m.cl)
                .arg(&m.qsl)
                .arg(&ns)
                .arg(&nh)
                .arg(&nkv)
                .arg(&bs)
                .arg(&mb)
                .arg(&scale_log2)
                .arg(&psize)
                .arg(&only_single)
                .arg(&window)
                .arg(&softcap_log2);
            // SAFETY: argument types match the kernel; partial buffers hold tokens x heads x partitions rows.
            unsafe { b.launch(cfg(grid, DECODE_THREADS)) }.w()?;
            let r = func(
                dev,
                Module::PagedAttention,
                &format!("paged_attention_reduce_{}", T::SUFFIX),
            )?;
            let hs = d.head_size as i32;
            let mut b = stream.launch_builder(&r);
            b.arg(&mut out)
                .arg(&part_acc)
                .arg(&part_ml)
                .arg(&m.cl)
                .arg(&m.qsl)
                .arg(&ns)
                .arg(&nh)
                .arg(&hs)
                .arg(&nparts)
                .arg(&psize)
                .arg(&only_single)
                .arg(&window);
            // SAFETY: argument types match the kernel.
            unsafe { b.launch(cfg((d.num_tokens as u32, d.num_heads as u32, 1), 128)) }.w()?;
        }
    }
    Ok(wrap(dev, out))
}
