// Rotary embedding, neox (rotate-half) form, out of place. Reference: kernels/src/rotary.rs.
// x: [tokens, heads, head_size] with any token and head stride (unit stride inside a head), so q and k can be
// read straight out of the fused qkv projection; cos/sin: [tokens, head_size / 2] f32; out: contiguous.
// One block per token; each thread rotates VEC pairs (x[i], x[i + half]).
#include "common.cuh"
using namespace indus;

template <typename T, int VEC>
__device__ __forceinline__ void rotary_neox(const T* __restrict__ x, const float* __restrict__ cos,
                                            const float* __restrict__ sin, T* __restrict__ out, int heads, int hs,
                                            long long token_stride, long long head_stride) {
  const int64_t t = blockIdx.x;
  const int half = hs / 2;
  const float* c = cos + t * half;
  const float* s = sin + t * half;
  const int per_head = half / VEC;
  for (int k = threadIdx.x; k < heads * per_head; k += blockDim.x) {
    const int h = k / per_head, i = (k % per_head) * VEC;
    const T* xb = x + t * token_stride + h * head_stride;
    T* ob = out + (t * heads + h) * (int64_t)hs;
    Pack<T, VEC> a = load_pack<T, VEC>(xb + i);
    Pack<T, VEC> b = load_pack<T, VEC>(xb + half + i);
    const Pack<float, VEC> cc = load_pack<float, VEC>(c + i);
    const Pack<float, VEC> ss = load_pack<float, VEC>(s + i);
#pragma unroll
    for (int v = 0; v < VEC; ++v) {
      const float x1 = to_f(a.v[v]), x2 = to_f(b.v[v]);
      a.v[v] = from_f<T>(x1 * cc.v[v] - x2 * ss.v[v]);
      b.v[v] = from_f<T>(x2 * cc.v[v] + x1 * ss.v[v]);
    }
    store_pack<T, VEC>(ob + i, a);
    store_pack<T, VEC>(ob + half + i, b);
  }
}

#define INDUS_ROTARY(T, NAME)                                                                                  \
  extern "C" __global__ void rotary_neox_##NAME(const T* x, const float* c, const float* s, T* out, int heads, \
                                                int hs, long long st, long long sh) {                          \
    rotary_neox<T, Vec16<T>::N>(x, c, s, out, heads, hs, st, sh);                                              \
  }                                                                                                            \
  extern "C" __global__ void rotary_neox_##NAME##_scalar(const T* x, const float* c, const float* s, T* out,   \
                                                         int heads, int hs, long long st, long long sh) {      \
    rotary_neox<T, 1>(x, c, s, out, heads, hs, st, sh);                                                        \
  }
INDUS_FOR_EACH_DTYPE(INDUS_ROTARY)
