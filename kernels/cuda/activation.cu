// SiLU(gate) * up over the fused gate_up projection [tokens, 2 * inter] -> [tokens, inter].
// Reference: kernels/src/activation.rs. Grid (tokens, column chunks); VEC elements per thread.
#include "common.cuh"
using namespace indus;

template <typename T, int VEC>
__device__ __forceinline__ void silu_mul(const T* __restrict__ x, T* __restrict__ y, int inter) {
  const int64_t row = blockIdx.x;
  const int i = (blockIdx.y * blockDim.x + threadIdx.x) * VEC;
  if (i >= inter) return;
  const T* g = x + row * 2 * inter;
  Pack<T, VEC> a = load_pack<T, VEC>(g + i);
  const Pack<T, VEC> b = load_pack<T, VEC>(g + inter + i);
#pragma unroll
  for (int v = 0; v < VEC; ++v) {
    const float gv = to_f(a.v[v]);
    a.v[v] = from_f<T>(gv / (1.f + expf(-gv)) * to_f(b.v[v]));
  }
  store_pack<T, VEC>(y + row * inter + i, a);
}

#define INDUS_SILU(T, NAME)                                                                    \
  extern "C" __global__ void silu_mul_##NAME(const T* x, T* y, int inter) {                    \
    silu_mul<T, Vec16<T>::N>(x, y, inter);                                                     \
  }                                                                                            \
  extern "C" __global__ void silu_mul_##NAME##_scalar(const T* x, T* y, int inter) {           \
    silu_mul<T, 1>(x, y, inter);                                                               \
  }
INDUS_FOR_EACH_DTYPE(INDUS_SILU)
