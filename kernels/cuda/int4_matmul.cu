// Int4 weight-only matmul (W4A16): y[M, N] = x[M, K] . W^T with W[n, k] = (q[k, n] - zero[g(k), n]) * scale[g(k), n].
// Reference: kernels/src/int4_matmul.rs (dequantize in f32, then a dense matmul). The packed layout is GPTQ's, the
// one models/src/quant/int4.rs loads both GPTQ and AWQ into:
// * qweight [K/8, N] u32: q[k, n] at nibble k % 8 of word (k / 8, n);
// * qzeros [G, N/8] u32: the stored zero of group g, column n at nibble n % 8 of word (g, n / 8); the zero point is
//   that plus zero_offset (1 for GPTQ v1 checkpoints, which store zero - 1);
// * scales [G, N] f16;
// * g_idx [K] i32 (act-order): the group of input k; without it g(k) = k / group_size (group_size 0: one group).
//
// Two kernels:
// * int4_gemv_*_m{MT}: decode-sized batches (M <= MT <= 16). One thread per output column (adjacent threads read
//   adjacent words of a qweight row: coalesced), a CTA per INT4_THREADS columns and INT4_K_CHUNK inputs (split-K
//   over gridDim.y). The CTA stages its slice of x (all M rows, as f32) and the slice's group indices in shared
//   memory; each thread dequantizes a word in registers (scale and zero reloaded only when the group changes) and
//   accumulates M dot products. With one K slice the thread writes y; with several it adds into an f32 buffer
//   that int4_finish_* converts.
// * int4_dequant_*: the dense W^T [K, N] in x's dtype, for larger M (cuBLAS multiplies it): one thread per packed
//   word, writes coalesced along N.
#include "common.cuh"
using namespace indus;

namespace {

constexpr int THREADS = INDUS_INT4_THREADS;
constexpr int KCHUNK = INDUS_INT4_K_CHUNK;
static_assert(KCHUNK % 8 == 0, "a K slice holds whole packed words");

__device__ __forceinline__ int default_group(int k, int group_size) { return group_size > 0 ? k / group_size : 0; }

__device__ __forceinline__ float zero_point(const uint32_t* __restrict__ qz, int g, int n, int N, int zero_offset) {
  const uint32_t word = qz[(int64_t)g * (N / 8) + n / 8];
  return (float)(((word >> (4 * (n % 8))) & 0xFu) + (uint32_t)zero_offset);
}

template <typename T, int MT>
__device__ __forceinline__ void int4_gemv(T* __restrict__ y, float* __restrict__ part, const T* __restrict__ x,
                                          const uint32_t* __restrict__ qw, const uint32_t* __restrict__ qz,
                                          const __half* __restrict__ sc, const int32_t* __restrict__ gidx, int M,
                                          int K, int N, int group_size, int zero_offset) {
  __shared__ float xs[MT][KCHUNK];
  __shared__ int gs[KCHUNK];
  const int n = blockIdx.x * THREADS + threadIdx.x;
  const int k0 = blockIdx.y * KCHUNK;
  const int kn = min(KCHUNK, K - k0);  // a multiple of 8: K is
  for (int e = threadIdx.x; e < MT * KCHUNK; e += THREADS) {
    const int m = e / KCHUNK, kk = e % KCHUNK;
    xs[m][kk] = (m < M && kk < kn) ? to_f(x[(int64_t)m * K + k0 + kk]) : 0.f;
  }
  for (int kk = threadIdx.x; kk < kn; kk += THREADS)
    gs[kk] = gidx != nullptr ? gidx[k0 + kk] : default_group(k0 + kk, group_size);
  __syncthreads();
  if (n >= N) return;

  float acc[MT];
#pragma unroll
  for (int m = 0; m < MT; ++m) acc[m] = 0.f;
  int cur = -1;
  float s = 0.f, z = 0.f;
  const uint32_t* col = qw + (int64_t)(k0 / 8) * N + n;
#pragma unroll 4
  for (int w = 0; w < kn / 8; ++w) {
    const uint32_t word = col[(int64_t)w * N];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int g = gs[w * 8 + j];
      if (g != cur) {
        cur = g;
        s = __half2float(sc[(int64_t)g * N + n]);
        z = zero_point(qz, g, n, N, zero_offset);
      }
      const float wv = ((float)((word >> (4 * j)) & 0xFu) - z) * s;
#pragma unroll
      for (int m = 0; m < MT; ++m) acc[m] = fmaf(wv, xs[m][w * 8 + j], acc[m]);
    }
  }
  if (gridDim.y == 1) {
#pragma unroll
    for (int m = 0; m < MT; ++m)
      if (m < M) y[(int64_t)m * N + n] = from_f<T>(acc[m]);
  } else {
#pragma unroll
    for (int m = 0; m < MT; ++m)
      if (m < M) atomicAdd(&part[(int64_t)m * N + n], acc[m]);
  }
}

template <typename T>
__device__ __forceinline__ void int4_dequant(T* __restrict__ wt, const uint32_t* __restrict__ qw,
                                             const uint32_t* __restrict__ qz, const __half* __restrict__ sc,
                                             const int32_t* __restrict__ gidx, int K, int N, int group_size,
                                             int zero_offset) {
  const int n = blockIdx.x * THREADS + threadIdx.x;
  const int kw = blockIdx.y;
  if (n >= N) return;
  const uint32_t word = qw[(int64_t)kw * N + n];
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int k = kw * 8 + j;
    const int g = gidx != nullptr ? gidx[k] : default_group(k, group_size);
    const float s = __half2float(sc[(int64_t)g * N + n]);
    const float z = zero_point(qz, g, n, N, zero_offset);
    wt[(int64_t)k * N + n] = from_f<T>(((float)((word >> (4 * j)) & 0xFu) - z) * s);
  }
}

}  // namespace

#define INDUS_INT4_GEMV(T, NAME, MT)                                                                             \
  extern "C" __global__ void __launch_bounds__(THREADS) int4_gemv_##NAME##_m##MT(                              \
      T* y, float* part, const T* x, const uint32_t* qw, const uint32_t* qz, const __half* sc,                 \
      const int32_t* gidx, int M, int K, int N, int group_size, int zero_offset) {                              \
    int4_gemv<T, MT>(y, part, x, qw, qz, sc, gidx, M, K, N, group_size, zero_offset);                          \
  }
#define INDUS_INT4(T, NAME)                                                                                     \
  INDUS_FOR_EACH_INT4_M_TILE(INDUS_INT4_GEMV, T, NAME)                                                          \
  extern "C" __global__ void int4_finish_##NAME(T* y, const float* part, int count) {                          \
    const int i = blockIdx.x * blockDim.x + threadIdx.x;                                                        \
    if (i < count) y[i] = from_f<T>(part[i]);                                                                   \
  }                                                                                                             \
  extern "C" __global__ void __launch_bounds__(THREADS) int4_dequant_##NAME(                                   \
      T* wt, const uint32_t* qw, const uint32_t* qz, const __half* sc, const int32_t* gidx, int K, int N,      \
      int group_size, int zero_offset) {                                                                        \
    int4_dequant<T>(wt, qw, qz, sc, gidx, K, N, group_size, zero_offset);                                       \
  }
INDUS_FOR_EACH_DTYPE(INDUS_INT4)
