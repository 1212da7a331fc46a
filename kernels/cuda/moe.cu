// Grouped mixture-of-experts feed-forward: one launch per projection for every expert at once.
// Reference: kernels/src/moe.rs (`fused_moe_reference`, token by token in f32).
//
// The host sorts the (token, choice) pairs by expert into "slots" and cuts each expert's slots into row tiles of
// INDUS_MOE_BM; tile t covers slots [tile_start[t], tile_start[t] + tile_len[t]) of expert tile_expert[t]. Then:
// * moe_gate_up_*: act[slot, c] = silu(x[token(slot)] . gate_e[c]) * (x[token(slot)] . up_e[c]) for c < I, where
//   gate_up is [E, 2I, H] (gate rows, then up rows) -- the gather of x rows and the SiLU-mul are fused in;
// * moe_down_*: y[slot, c] = act[slot] . down_e[c] for c < H, down being [E, H, I]; y in f32;
// * moe_combine_*: out[t, c] = sum over the k choices j of weight[t, j] * y[slot_of[t, j], c], in choice order
//   (deterministic: no atomics).
// The GEMMs are tiled FMA in f32 (INDUS_MOE_BM x INDUS_MOE_BN outputs a CTA, INDUS_MOE_BK-deep K tiles staged in
// shared memory, both operands read along K); tensor-core tiles are not written.
#include "common.cuh"
using namespace indus;

namespace {

constexpr int BM = INDUS_MOE_BM;
constexpr int BN = INDUS_MOE_BN;
constexpr int BK = INDUS_MOE_BK;
constexpr int THREADS = INDUS_MOE_THREADS;
constexpr int TN = 16;                 // threads along N
constexpr int TM = THREADS / TN;       // threads along M
constexpr int RM = BM / TM;            // rows a thread computes
constexpr int RN = BN / TN;            // columns a thread computes
static_assert(RM * TM == BM && RN * TN == BN, "the thread grid covers the tile");

// One CTA's tile of C = A . B^T (both read along K), optionally a second B (the up rows) for the gated case.
// A row r of the tile is `a + a_row(r) * K`; B rows are `b + col * K` (and `b2 + col * K`).
template <typename T, bool GATED>
__device__ __forceinline__ void tile_gemm(float (&acc)[RM][RN], float (&acc2)[RM][RN], const T* __restrict__ a,
                                          const int64_t* a_rows, int rows, const T* __restrict__ b,
                                          const T* __restrict__ b2, int n0, int N, int K) {
  __shared__ float As[BM][BK + 1];
  __shared__ float Bs[BN][BK + 1];
  __shared__ float Bs2[GATED ? BN : 1][BK + 1];
  const int tx = threadIdx.x % TN, ty = threadIdx.x / TN;
#pragma unroll
  for (int i = 0; i < RM; ++i)
#pragma unroll
    for (int j = 0; j < RN; ++j) acc[i][j] = acc2[i][j] = 0.f;
  for (int k0 = 0; k0 < K; k0 += BK) {
    for (int e = threadIdx.x; e < BM * BK; e += THREADS) {
      const int r = e / BK, kk = e % BK;
      As[r][kk] = (r < rows && k0 + kk < K) ? to_f(a[a_rows[r] * K + k0 + kk]) : 0.f;
    }
    for (int e = threadIdx.x; e < BN * BK; e += THREADS) {
      const int c = e / BK, kk = e % BK;
      const bool in = n0 + c < N && k0 + kk < K;
      Bs[c][kk] = in ? to_f(b[(int64_t)(n0 + c) * K + k0 + kk]) : 0.f;
      if (GATED) Bs2[c][kk] = in ? to_f(b2[(int64_t)(n0 + c) * K + k0 + kk]) : 0.f;
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < BK; ++kk) {
      float av[RM], bv[RN], bv2[RN];
#pragma unroll
      for (int i = 0; i < RM; ++i) av[i] = As[ty + i * TM][kk];
#pragma unroll
      for (int j = 0; j < RN; ++j) {
        bv[j] = Bs[tx + j * TN][kk];
        if (GATED) bv2[j] = Bs2[tx + j * TN][kk];
      }
#pragma unroll
      for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < RN; ++j) {
          acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
          if (GATED) acc2[i][j] = fmaf(av[i], bv2[j], acc2[i][j]);
        }
    }
    __syncthreads();
  }
}

template <typename T>
__device__ __forceinline__ void moe_gate_up(T* __restrict__ act, const T* __restrict__ x, const T* __restrict__ gu,
                                            const uint32_t* __restrict__ slot_token,
                                            const uint32_t* __restrict__ tile_expert,
                                            const uint32_t* __restrict__ tile_start,
                                            const uint32_t* __restrict__ tile_len, int H, int I) {
  __shared__ int64_t a_rows[BM];
  const int t = blockIdx.y, n0 = blockIdx.x * BN;
  const int e = tile_expert[t], s0 = tile_start[t], rows = tile_len[t];
  for (int r = threadIdx.x; r < BM; r += THREADS) a_rows[r] = r < rows ? (int64_t)slot_token[s0 + r] : 0;
  __syncthreads();
  const T* gate = gu + (int64_t)e * 2 * I * H;
  float g[RM][RN], u[RM][RN];
  tile_gemm<T, true>(g, u, x, a_rows, rows, gate, gate + (int64_t)I * H, n0, I, H);
  const int tx = threadIdx.x % TN, ty = threadIdx.x / TN;
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int r = ty + i * TM;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < RN; ++j) {
      const int c = n0 + tx + j * TN;
      if (c < I) {
        const float gv = g[i][j];
        act[(int64_t)(s0 + r) * I + c] = from_f<T>(gv / (1.f + expf(-gv)) * u[i][j]);
      }
    }
  }
}

template <typename T>
__device__ __forceinline__ void moe_down(float* __restrict__ y, const T* __restrict__ act, const T* __restrict__ dn,
                                         const uint32_t* __restrict__ tile_expert,
                                         const uint32_t* __restrict__ tile_start,
                                         const uint32_t* __restrict__ tile_len, int H, int I) {
  __shared__ int64_t a_rows[BM];
  const int t = blockIdx.y, n0 = blockIdx.x * BN;
  const int e = tile_expert[t], s0 = tile_start[t], rows = tile_len[t];
  for (int r = threadIdx.x; r < BM; r += THREADS) a_rows[r] = s0 + (r < rows ? r : 0);
  __syncthreads();
  float acc[RM][RN], unused[RM][RN];
  tile_gemm<T, false>(acc, unused, act, a_rows, rows, dn + (int64_t)e * H * I, nullptr, n0, H, I);
  const int tx = threadIdx.x % TN, ty = threadIdx.x / TN;
#pragma unroll
  for (int i = 0; i < RM; ++i) {
    const int r = ty + i * TM;
    if (r >= rows) continue;
#pragma unroll
    for (int j = 0; j < RN; ++j) {
      const int c = n0 + tx + j * TN;
      if (c < H) y[(int64_t)(s0 + r) * H + c] = acc[i][j];
    }
  }
}

template <typename T>
__device__ __forceinline__ void moe_combine(T* __restrict__ out, const float* __restrict__ y,
                                            const uint32_t* __restrict__ slot_of, const float* __restrict__ w,
                                            int tokens, int k, int H) {
  const int t = blockIdx.y;
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= tokens || c >= H) return;
  float s = 0.f;
  for (int j = 0; j < k; ++j) s = fmaf(w[t * k + j], y[(int64_t)slot_of[t * k + j] * H + c], s);
  out[(int64_t)t * H + c] = from_f<T>(s);
}

}  // namespace

#define INDUS_MOE(T, NAME)                                                                                      \
  extern "C" __global__ void __launch_bounds__(THREADS)                                                        \
      moe_gate_up_##NAME(T* act, const T* x, const T* gu, const uint32_t* slot_token, const uint32_t* te,      \
                         const uint32_t* ts, const uint32_t* tl, int H, int I) {                               \
    moe_gate_up<T>(act, x, gu, slot_token, te, ts, tl, H, I);                                                   \
  }                                                                                                             \
  extern "C" __global__ void __launch_bounds__(THREADS)                                                        \
      moe_down_##NAME(float* y, const T* act, const T* dn, const uint32_t* te, const uint32_t* ts,             \
                      const uint32_t* tl, int H, int I) {                                                       \
    moe_down<T>(y, act, dn, te, ts, tl, H, I);                                                                  \
  }                                                                                                             \
  extern "C" __global__ void moe_combine_##NAME(T* out, const float* y, const uint32_t* slot_of,               \
                                                const float* w, int tokens, int k, int H) {                    \
    moe_combine<T>(out, y, slot_of, w, tokens, k, H);                                                           \
  }
INDUS_FOR_EACH_DTYPE(INDUS_MOE)
