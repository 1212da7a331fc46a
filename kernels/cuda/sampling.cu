// Device sampling over a batch of f32 logits [batch, vocab]: one CTA of INDUS_SAMPLE_THREADS threads per row.
// Reference and the exact semantics: kernels/src/sampling.rs (`sample_reference`). In short, with the row's
// parameters resolved on the host (KernelRow: 1/T and ln(min_p) computed once there, so neither side divides or
// takes a log on its own):
//   greedy (flagged, no params, every logit -inf or NaN, or a +inf logit): the first index of the maximum logit;
//   otherwise x_i = (l_i - max) * (1/T) and w_i = indus_exp(x_i) (fma_exp.cuh: the same bits as the host's
//   exp_fma), and a token is kept when
//     l_i >= the k-th largest logit (top_k > 0)             -- ties at the threshold are kept
//     x_i >= ln(min_p)                                       -- min-p relative to the top token, in the log domain
//     l_i >= the top-p threshold: the largest logit value whose kept mass from the top reaches top_p of the total
//   then the token is drawn by inverse CDF in index order with the caller's uniform u in [0, 1).
// Masses are fixed-point integers (w * 2^40 truncated, summed in u64), so every sum is exact and the result does
// not depend on the order of atomics; with the exp identical too, the device and the CPU reference pick the same
// token for every row.
// Thresholds on logits are found by radix select on order-preserving 32-bit keys (4 passes of 8 bits).
#include "common.cuh"
#include "fma_exp.cuh"
using namespace indus;

struct KernelRow {  // #[repr(C)] twin: sampling::KernelRow in kernels/src/sampling.rs
  uint32_t greedy;
  float inv_temperature;
  uint32_t top_k;
  float top_p;
  float log_min_p;  // -inf: min-p off
  float uniform;
};
static_assert(sizeof(KernelRow) == INDUS_SAMPLING_ROW_BYTES, "KernelRow must match its Rust twin");

namespace {
constexpr int S_THREADS = INDUS_SAMPLE_THREADS;
constexpr int S_WARPS = S_THREADS / 32;

__device__ __forceinline__ float logit_at(const float* x, int i) {
  const float v = x[i];
  return isnan(v) ? -INFINITY : v;
}
__device__ __forceinline__ uint32_t key_of(float v) {
  const uint32_t b = __float_as_uint(v);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ unsigned long long fixed_of(float w) {
  // Exact scaling by 2^40, truncated; NaN and non-positive weights are 0 (explicitly, not by conversion rules).
  return w > 0.f ? (unsigned long long)__fmul_rn(w, 1099511627776.0f) : 0ull;
}

struct Shared {
  unsigned long long hist64[256];
  uint32_t hist[256];
  unsigned long long wsum[S_WARPS];
  float bv[S_WARPS];
  int bi[S_WARPS];
  uint32_t prefix;
  unsigned long long above;
  unsigned long long total;
  int found;
};

__device__ unsigned long long block_sum_u64(unsigned long long v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) sh.wsum[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long s = 0;
    for (int w = 0; w < S_WARPS; ++w) s += sh.wsum[w];
    sh.total = s;
  }
  __syncthreads();
  const unsigned long long r = sh.total;
  __syncthreads();
  return r;
}

// Keys k with (k & mask) == prefix are the candidates; finds the 32-bit key where the count (or mass) from the
// top first reaches `need`. `mass` selects mass (u64) or count histograms. Returns the key.
template <typename Pred, typename Weight>
__device__ uint32_t radix_select(const float* x, int vocab, unsigned long long need, bool mass, Pred pred,
                                 Weight weight, Shared& sh) {
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += S_THREADS) {
      sh.hist[b] = 0;
      sh.hist64[b] = 0;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < vocab; i += S_THREADS) {
      const float l = logit_at(x, i);
      const uint32_t k = key_of(l);
      if ((k & mask) != prefix || !pred(l)) continue;
      const int d = (k >> shift) & 255;
      if (mass) {
        const unsigned long long w = weight(l);
        if (w) atomicAdd(&sh.hist64[d], w);
      } else {
        atomicAdd(&sh.hist[d], 1u);
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long acc = 0;
      int sel = 0;
      for (int d = 255; d >= 0; --d) {
        const unsigned long long h = mass ? sh.hist64[d] : (unsigned long long)sh.hist[d];
        if (acc + h >= need && h > 0) {
          sel = d;
          break;
        }
        acc += h;
      }
      sh.prefix = prefix | ((uint32_t)sel << shift);
      sh.above = acc;
    }
    __syncthreads();
    need -= sh.above;
    prefix = sh.prefix;
    mask |= 255u << shift;
    __syncthreads();
  }
  return prefix;
}

__device__ void sample_row(const float* __restrict__ logits, const KernelRow* __restrict__ rows,
                           uint32_t* __restrict__ out, int vocab) {
  __shared__ Shared sh;
  const int row = blockIdx.x;
  const float* x = logits + (int64_t)row * vocab;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  // Max logit and its first index.
  float bv = -INFINITY;
  int bi = vocab;
  for (int i = threadIdx.x; i < vocab; i += S_THREADS) {
    const float v = logit_at(x, i);
    if (v > bv) {
      bv = v;
      bi = i;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
  if (lane == 0) {
    sh.bv[warp] = bv;
    sh.bi[warp] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < S_WARPS; ++w)
      if (sh.bv[w] > bv || (sh.bv[w] == bv && sh.bi[w] < bi)) {
        bv = sh.bv[w];
        bi = sh.bi[w];
      }
    sh.bv[0] = bv;
    sh.bi[0] = bi < vocab ? bi : 0;
  }
  __syncthreads();
  const float mx = sh.bv[0];
  const int argmax = sh.bi[0];
  if (rows == nullptr || rows[row].greedy != 0 || !(mx > -INFINITY) || mx == INFINITY) {
    if (threadIdx.x == 0) out[row] = (uint32_t)argmax;
    return;
  }
  const KernelRow p = rows[row];
  const float inv_t = p.inv_temperature;
  // The scaled log-weight and the weight, exactly as sampling.rs computes them.
  auto x_of = [&](float l) { return __fmul_rn(__fsub_rn(l, mx), inv_t); };
  auto w_of = [&](float l) { return indus_exp(x_of(l)); };

  // top-k: the key of the k-th largest logit.
  uint32_t thr = 0;
  if (p.top_k > 0 && p.top_k < (uint32_t)vocab) {
    thr = radix_select(
        x, vocab, p.top_k, false, [](float) { return true; }, [](float) { return 0ull; }, sh);
  }
  const float log_min_p = p.log_min_p;
  auto kept = [&](float l) { return key_of(l) >= thr && x_of(l) >= log_min_p; };
  auto mass = [&](float l) { return fixed_of(w_of(l)); };

  // top-p: the key where the kept mass from the top first reaches floor(top_p * total) (at least 1).
  if (p.top_p < 1.f) {
    unsigned long long part = 0;
    for (int i = threadIdx.x; i < vocab; i += S_THREADS) {
      const float l = logit_at(x, i);
      if (kept(l)) part += mass(l);
    }
    const unsigned long long total = block_sum_u64(part, sh);
    if (total > 0) {
      unsigned long long need = (unsigned long long)((double)p.top_p * (double)total);
      if (need < 1) need = 1;
      const uint32_t tp = radix_select(x, vocab, need, true, kept, mass, sh);
      thr = thr > tp ? thr : tp;
    }
  }

  // Inverse CDF in index order over the kept mass.
  unsigned long long part = 0;
  for (int i = threadIdx.x; i < vocab; i += S_THREADS) {
    const float l = logit_at(x, i);
    if (kept(l)) part += mass(l);
  }
  const unsigned long long total = block_sum_u64(part, sh);
  if (total == 0) {
    if (threadIdx.x == 0) out[row] = (uint32_t)argmax;
    return;
  }
  unsigned long long target = (unsigned long long)((double)p.uniform * (double)total);
  if (target >= total) target = total - 1;
  if (threadIdx.x == 0) sh.found = 0;
  unsigned long long running = 0;
  for (int base = 0; base < vocab; base += S_THREADS) {
    const int i = base + threadIdx.x;
    unsigned long long w = 0;
    if (i < vocab) {
      const float l = logit_at(x, i);
      if (kept(l)) w = mass(l);
    }
    // Inclusive scan of w over the block.
    unsigned long long incl = w;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned long long n = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += n;
    }
    if (lane == 31) sh.wsum[warp] = incl;
    __syncthreads();
    unsigned long long before = 0, tile = 0;
    for (int wi = 0; wi < S_WARPS; ++wi) {
      const unsigned long long s = sh.wsum[wi];
      if (wi < warp) before += s;
      tile += s;
    }
    incl += running + before;
    const unsigned long long excl = incl - w;
    if (w > 0 && excl <= target && target < incl) {
      out[row] = (uint32_t)i;
      sh.found = 1;
    }
    running += tile;
    __syncthreads();
    if (sh.found) return;
  }
  if (threadIdx.x == 0) out[row] = (uint32_t)argmax;  // unreachable: the scan covers the total
}
}  // namespace

extern "C" __global__ void __launch_bounds__(S_THREADS)
    sample_f32(const float* logits, const KernelRow* rows, uint32_t* out, int vocab) {
  sample_row(logits, rows, out, vocab);
}

// indus_exp of every element: how indus-gpu-check compares the device's exp with the host's, bit for bit.
extern "C" __global__ void fma_exp_f32(const float* __restrict__ x, float* __restrict__ y, long long n) {
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = indus_exp(x[i]);
}
