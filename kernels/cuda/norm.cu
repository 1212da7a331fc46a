// RMSNorm and residual-add + RMSNorm. Reference: kernels/src/norm.rs.
// One block per row; 16-byte packed loads (VEC elements) when the row allows it. Accumulation in f32.
// The fused kernel writes its two outputs into one buffer [2, rows, dim]: normed rows first, then the new
// residual stream (x + residual, rounded to T exactly as the unfused `x + residual` would be).
#include "common.cuh"
using namespace indus;

template <typename T, int VEC>
__device__ __forceinline__ void rms_norm_row(const T* __restrict__ x, const T* __restrict__ w, T* __restrict__ y,
                                             int dim, float eps) {
  __shared__ float red[33];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * dim;
  T* yr = y + row * dim;
  float ss = 0.f;
  for (int i = threadIdx.x * VEC; i < dim; i += blockDim.x * VEC) {
    Pack<T, VEC> p = load_pack<T, VEC>(xr + i);
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      const float f = to_f(p.v[v]);
      ss += f * f;
    }
  }
  const float inv = rsqrtf(block_sum(ss, red) / (float)dim + eps);
  for (int i = threadIdx.x * VEC; i < dim; i += blockDim.x * VEC) {
    Pack<T, VEC> p = load_pack<T, VEC>(xr + i);
    Pack<T, VEC> g = load_pack<T, VEC>(w + i);
#pragma unroll
    for (int v = 0; v < VEC; ++v) p.v[v] = from_f<T>(to_f(p.v[v]) * inv * to_f(g.v[v]));
    store_pack<T, VEC>(yr + i, p);
  }
}

// out[0] = rms_norm(x + residual) * w, out[1] = x + residual.
template <typename T, int VEC>
__device__ __forceinline__ void fused_add_rms_norm_row(const T* __restrict__ x, const T* __restrict__ res,
                                                       const T* __restrict__ w, T* __restrict__ out, int rows,
                                                       int dim, float eps) {
  __shared__ float red[33];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * dim;
  const T* rr = res + row * dim;
  T* yr = out + row * dim;
  T* sr = out + ((int64_t)rows + row) * dim;
  float ss = 0.f;
  for (int i = threadIdx.x * VEC; i < dim; i += blockDim.x * VEC) {
    Pack<T, VEC> a = load_pack<T, VEC>(xr + i);
    Pack<T, VEC> b = load_pack<T, VEC>(rr + i);
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      a.v[v] = from_f<T>(to_f(a.v[v]) + to_f(b.v[v]));
      const float f = to_f(a.v[v]);
      ss += f * f;
    }
    store_pack<T, VEC>(sr + i, a);
  }
  const float inv = rsqrtf(block_sum(ss, red) / (float)dim + eps);
  // Each thread reads back only the chunks it wrote itself: no barrier needed.
  for (int i = threadIdx.x * VEC; i < dim; i += blockDim.x * VEC) {
    Pack<T, VEC> p = load_pack<T, VEC>(sr + i);
    Pack<T, VEC> g = load_pack<T, VEC>(w + i);
#pragma unroll
    for (int v = 0; v < VEC; ++v) p.v[v] = from_f<T>(to_f(p.v[v]) * inv * to_f(g.v[v]));
    store_pack<T, VEC>(yr + i, p);
  }
}

#define INDUS_NORM(T, NAME)                                                                                   \
  extern "C" __global__ void rms_norm_##NAME(const T* x, const T* w, T* y, int dim, float eps) {              \
    rms_norm_row<T, Vec16<T>::N>(x, w, y, dim, eps);                                                          \
  }                                                                                                           \
  extern "C" __global__ void rms_norm_##NAME##_scalar(const T* x, const T* w, T* y, int dim, float eps) {     \
    rms_norm_row<T, 1>(x, w, y, dim, eps);                                                                    \
  }                                                                                                           \
  extern "C" __global__ void fused_add_rms_norm_##NAME(const T* x, const T* r, const T* w, T* out, int rows,  \
                                                       int dim, float eps) {                                  \
    fused_add_rms_norm_row<T, Vec16<T>::N>(x, r, w, out, rows, dim, eps);                                     \
  }                                                                                                           \
  extern "C" __global__ void fused_add_rms_norm_##NAME##_scalar(const T* x, const T* r, const T* w, T* out,   \
                                                                int rows, int dim, float eps) {               \
    fused_add_rms_norm_row<T, 1>(x, r, w, out, rows, dim, eps);                                               \
  }
INDUS_FOR_EACH_DTYPE(INDUS_NORM)
