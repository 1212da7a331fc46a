//! The CUDA side of the ops (feature `cuda`): the fatbins built by build.rs from kernels/cuda/*.cu, a per-device
//! cache of loaded modules and functions, and small helpers shared by the ops' `cuda_fwd`s.
//!
//! Launches go through cudarc on candle's stream for the device (`CudaDevice::cuda_stream`), so they are ordered
//! with candle's own kernels and cuBLAS calls without extra synchronisation.
//!
//! Not here yet (engine-level, later): CUDA-graph capture and replay of decode steps per batch-size bucket. The
//! kernels are graph-safe (no host synchronisation, no allocation inside a launch besides candle's stream-ordered
//! pool), but the split-K plan and the metadata uploads must be made static per bucket first.

pub(crate) mod attention;
pub(crate) mod int4;
pub(crate) mod moe;
pub(crate) mod ops;
pub(crate) mod sampling;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaView, DeviceRepr, LaunchConfig, sys,
};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::cuda_backend::{CudaDType, DeviceId, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Storage, Tensor};
use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub(crate) mod fatbins {
    include!(concat!(env!("OUT_DIR"), "/cuda_modules.rs"));
}

/// The archs the embedded kernels were compiled for (INDUS_CUDA_ARCHS at build time), e.g. "80;86;89;90".
pub fn compiled_archs() -> &'static str {
    fatbins::ARCHS
}

/// One compiled `.cu` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    CacheWrite,
    PagedAttention,
    Norm,
    Rotary,
    Activation,
    Sampling,
    Int4Matmul,
    Moe,
}

impl Module {
    fn image(self) -> &'static [u8] {
        match self {
            Module::CacheWrite => fatbins::CACHE_WRITE,
            Module::PagedAttention => fatbins::PAGED_ATTENTION,
            Module::Norm => fatbins::NORM,
            Module::Rotary => fatbins::ROTARY,
            Module::Activation => fatbins::ACTIVATION,
            Module::Sampling => fatbins::SAMPLING,
            Module::Int4Matmul => fatbins::INT4_MATMUL,
            Module::Moe => fatbins::MOE,
        }
    }
}

type FuncKey = (DeviceId, Module, String);

#[derive(Default)]
struct Registry {
    modules: HashMap<(DeviceId, Module), Arc<CudaModule>>,
    funcs: HashMap<FuncKey, CudaFunction>,
}

fn registry() -> &'static Mutex<Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// The kernel `name` of `module` on `dev`, loading the module (fatbin) on first use.
pub(crate) fn func(dev: &CudaDevice, module: Module, name: &str) -> Result<CudaFunction> {
    let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
    let key = (dev.id(), module, name.to_string());
    if let Some(f) = reg.funcs.get(&key) {
        return Ok(f.clone());
    }
    let m = match reg.modules.get(&(dev.id(), module)) {
        Some(m) => m.clone(),
        None => {
            let ctx = dev.cuda_stream().context().clone();
            // The fatbin is copied to the heap: the driver reads the image through an aligned pointer.
            let m = ctx
                .load_module(Ptx::from_binary(module.image().to_vec()))
                .map_err(|e| {
                    candle_core::Error::Cuda(
                        format!(
                            "loading indus kernels ({module:?}, built for sm {}): {e}",
                            compiled_archs()
                        )
                        .into(),
                    )
                })?;
            reg.modules.insert((dev.id(), module), m.clone());
            m
        }
    };
    let f = m.load_function(name).w()?;
    reg.funcs.insert(key, f.clone());
    Ok(f)
}

/// Number of streaming multiprocessors of `dev`.
pub(crate) fn sm_count(dev: &CudaDevice) -> Result<usize> {
    let ctx = dev.cuda_stream().context().clone();
    let n = ctx
        .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .w()?;
    Ok(n.max(1) as usize)
}

/// Element types the kernels are instantiated for, with the suffix of their entry points.
pub(crate) trait KernelType: CudaDType + DeviceRepr + Copy + 'static {
    const SUFFIX: &'static str;
    /// Elements per 16-byte access.
    const VEC: usize = 16 / std::mem::size_of::<Self>();
}
impl KernelType for f32 {
    const SUFFIX: &'static str = "f32";
}
impl KernelType for bf16 {
    const SUFFIX: &'static str = "bf16";
}
impl KernelType for f16 {
    const SUFFIX: &'static str = "f16";
}

/// The contiguous view of a storage under `layout` (with its start offset), or an error naming the op.
pub(crate) fn view<'a, T: CudaDType + DeviceRepr>(
    s: &'a CudaStorage,
    layout: &Layout,
    op: &str,
) -> Result<CudaView<'a, T>> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input must be contiguous")))?;
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

/// A new uninitialised device buffer of `n` elements (every kernel writing into one writes all of it).
pub(crate) fn alloc<T: DeviceRepr>(dev: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    // SAFETY: the kernel that receives the buffer writes every element before anything reads it.
    unsafe { dev.alloc::<T>(n.max(1)) }
}

pub(crate) fn wrap<T: KernelType>(dev: &CudaDevice, s: CudaSlice<T>) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(s, dev.clone())
}

/// Threads for a block of `units` work items: a multiple of 32 in [32, max].
pub(crate) fn threads_for(units: usize, max: usize) -> u32 {
    units.div_ceil(32).clamp(1, max / 32) as u32 * 32
}

pub(crate) fn cfg(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A tensor's storage on the GPU, held for the launch.
pub(crate) struct Held<'a> {
    guard: candle_core::StorageRef<'a>,
    layout: Layout,
}

impl<'a> Held<'a> {
    pub(crate) fn of(t: &'a Tensor) -> Self {
        let (guard, layout) = t.storage_and_layout();
        Self {
            guard,
            layout: layout.clone(),
        }
    }

    pub(crate) fn view<T: CudaDType + DeviceRepr>(&self, what: &str) -> Result<CudaView<'_, T>> {
        match &*self.guard {
            Storage::Cuda(c) => view::<T>(c, &self.layout, what),
            _ => candle_core::bail!("{what} must be on the GPU"),
        }
    }
}

/// A u32 tensor's device data (block tables, context lengths, query starts), with the read guard that keeps it
/// alive while a kernel is launched with it.
pub(crate) struct U32Arg<'a> {
    guard: candle_core::StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> U32Arg<'a> {
    pub(crate) fn of(t: &'a Tensor, what: &str) -> Result<Self> {
        if t.dtype() != DType::U32 {
            candle_core::bail!("{what} must be u32, got {:?}", t.dtype());
        }
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
        if !matches!(&*guard, Storage::Cuda(_)) {
            candle_core::bail!("{what} must be on the GPU");
        }
        Ok(Self { guard, start, end })
    }

    pub(crate) fn view(&self) -> Result<CudaView<'_, u32>> {
        match &*self.guard {
            Storage::Cuda(c) => Ok(c.as_cuda_slice::<u32>()?.slice(self.start..self.end)),
            _ => candle_core::bail!("expected a CUDA tensor"),
        }
    }
}
