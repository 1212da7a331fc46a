// Paged attention over a mixed batch. Reference: kernels/src/paged_attention.rs (same causal semantics:
// query token j of a sequence with q_len new tokens and context_len cached tokens sits at position
// context_len - q_len + j and sees cache positions 0..=that). Every kernel takes the layer's attention variant as the
// reference does: a sliding window (window > 0: that token sees only positions (p - window, p]) and a score
// soft-cap (softcap_log2 > 0: score = cap * tanh(score / cap), in the log2 domain: softcap_log2 = cap * log2 e).
//
// KV cache layout (kernels/src/kv_layout.rs): [num_blocks, num_kv_heads, block_size, head_size], so one
// block's keys of one head are block_size contiguous rows of head_size elements.
//
// Three kernels:
// * paged_attention_decode_*: one CTA per (query token, kv head [, group chunk] [, partition]). It reads each
//   KV row once for all the query heads of its GQA group (up to GMAX of them), 16-byte loads, scores staged
//   in shared memory CHUNK tokens at a time with an online softmax across chunks. Serves decode (one query
//   token per sequence) and, as the general fallback, any query token (f32, head sizes without a tensor-core
//   kernel). With partition_size > 0 it is the split-K variant: each CTA covers one partition of the context
//   and writes unnormalised partial results that paged_attention_reduce_* combines.
// * paged_attention_reduce_*: combines the partitions of the split-K variant.
// * paged_attention_prefill_*: flash-style tiles of BM query tokens x BN keys for sequences with several query
//   tokens (bf16/f16): mma.sync m16n8k16 tensor-core products for Q.K^T and P.V, online softmax in registers,
//   causal masking, K/V tiles gathered from the paged cache with cp.async; no score matrix in memory.
#include "common.cuh"
using namespace indus;

namespace {

// Sizes shared with the Rust launches come from indus_shared.cuh (generated from kernels/src/shared.rs).
constexpr int DEC_WARPS = INDUS_DECODE_WARPS;
constexpr int DEC_THREADS = INDUS_DECODE_THREADS;
static_assert(DEC_THREADS == DEC_WARPS * 32, "decode CTA: whole warps");
constexpr int DEC_CHUNK = 256;  // tokens whose scores are staged in shared memory at a time

// Index of the sequence that owns flattened query token t: the largest s with qsl[s] <= t.
__device__ __forceinline__ int seq_of_token(const uint32_t* qsl, int num_seqs, uint32_t t) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (qsl[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// The soft-capped score in the log2 domain: cap * tanh(s / cap) for s = x / log2(e), times log2(e) again.
__device__ __forceinline__ float softcap_score(float x, float softcap_log2) {
  return softcap_log2 > 0.f ? softcap_log2 * tanhf(x / softcap_log2) : x;
}

// First key position a query that sees `visible` positions attends to under `window` (0: no window).
__device__ __forceinline__ int window_start(int visible, int window) {
  return window > 0 ? max(0, visible - window) : 0;
}

// Loads VEC consecutive elements as f32.
template <typename T, int VEC>
__device__ __forceinline__ void load_f(const T* p, float (&dst)[VEC]) {
  constexpr int N16 = Vec16<T>::N;
  static_assert(VEC % N16 == 0, "VEC must be a multiple of a 16-byte access");
#pragma unroll
  for (int c = 0; c < VEC / N16; ++c) {
    const Pack<T, N16> p16 = load_pack<T, N16>(p + c * N16);
#pragma unroll
    for (int v = 0; v < N16; ++v) dst[c * N16 + v] = to_f(p16.v[v]);
  }
}

// ------------------------------------------------------------------------------------------------------------
// Decode / general kernel.
// grid: (num_tokens, num_kv_heads * head_chunks, num_partitions); block: DEC_THREADS.
// Lanes are grouped LPT to a KV row; each lane holds VEC elements of the row (16-byte loads); a warp covers
// TPW = 32 / LPT consecutive rows per step.
template <typename T, int D, int GMAX>
__device__ __forceinline__ void paged_attention_decode(
    T* __restrict__ out, float* __restrict__ part_acc, float* __restrict__ part_ml, const T* __restrict__ q,
    const T* __restrict__ kc, const T* __restrict__ vc, const uint32_t* __restrict__ block_tables,
    const uint32_t* __restrict__ context_lens, const uint32_t* __restrict__ qsl, int num_seqs, int num_heads,
    int num_kv_heads, int block_size, int max_blocks, float scale_log2, int partition_size, int only_single,
    int window, float softcap_log2) {
  constexpr int N16 = Vec16<T>::N;
  constexpr int LPT = (D / N16) < 32 ? (D / N16) : 32;
  constexpr int VEC = D / LPT;
  constexpr int TPW = 32 / LPT;
  constexpr int STEP = DEC_WARPS * TPW;
  static_assert(LPT * VEC == D && 32 % LPT == 0, "unsupported head size");
  static_assert(DEC_THREADS % GMAX == 0, "GMAX must divide the block");
  constexpr int SCORE_FLOATS = DEC_CHUNK * GMAX;
  constexpr int MERGE_FLOATS = DEC_WARPS * GMAX * D;
  constexpr int SMEM_FLOATS = SCORE_FLOATS > MERGE_FLOATS ? SCORE_FLOATS : MERGE_FLOATS;
  __shared__ __align__(32) float smem[SMEM_FLOATS];
  __shared__ float red[DEC_WARPS][GMAX];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int grp = lane / LPT, li = lane % LPT;
  const int group = num_heads / num_kv_heads;
  const int chunks = (group + GMAX - 1) / GMAX;
  const int kvh = blockIdx.y / chunks;
  const int g0 = (blockIdx.y % chunks) * GMAX;
  const int gcount = min(GMAX, group - g0);
  const uint32_t t = blockIdx.x;
  const int s = seq_of_token(qsl, num_seqs, t);
  const int q_len = (int)(qsl[s + 1] - qsl[s]);
  if (only_single && q_len != 1) return;
  const int visible = (int)context_lens[s] - q_len + (int)(t - qsl[s]) + 1;
  const int first = window_start(visible, window);
  int t0 = first, t1 = visible;
  if (partition_size > 0) {
    t0 = first + blockIdx.z * partition_size;
    t1 = min(visible, t0 + partition_size);
    if (t0 >= visible) return;
  }
  const uint32_t* table = block_tables + (int64_t)s * max_blocks;
  const int64_t head_row = (int64_t)kvh * block_size;  // (block * kvh_count + kvh) * block_size, minus block part
  const int64_t block_stride = (int64_t)num_kv_heads * block_size;

  // This lane's slice of the query rows of the group, pre-scaled by scale * log2(e).
  float qr[GMAX][VEC];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    if (g < gcount) {
      load_f<T, VEC>(q + ((int64_t)t * num_heads + kvh * group + g0 + g) * D + li * VEC, qr[g]);
#pragma unroll
      for (int v = 0; v < VEC; ++v) qr[g][v] *= scale_log2;
    } else {
#pragma unroll
      for (int v = 0; v < VEC; ++v) qr[g][v] = 0.f;
    }
  }
  float acc[GMAX][VEC];
  float m[GMAX];
#pragma unroll
  for (int g = 0; g < GMAX; ++g) {
    m[g] = -INFINITY;
#pragma unroll
    for (int v = 0; v < VEC; ++v) acc[g][v] = 0.f;
  }
  const int my_g = tid % GMAX;  // the head whose probabilities this thread sums (fixed: DEC_THREADS % GMAX == 0)
  float lsum = 0.f;

  for (int c0 = t0; c0 < t1; c0 += DEC_CHUNK) {
    const int n = min(DEC_CHUNK, t1 - c0);
    // Phase 1: scores of the chunk (log2 domain) into shared memory.
    float lmax[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) lmax[g] = -INFINITY;
    for (int base = warp * TPW; base < n; base += STEP) {
      const int i = base + grp;
      const bool valid = i < n;
      float k[VEC];
      if (valid) {
        const int pos = c0 + i;
        const int64_t blk = table[pos / block_size];
        load_f<T, VEC>(kc + (blk * block_stride + head_row + pos % block_size) * D + li * VEC, k);
      } else {
#pragma unroll
        for (int v = 0; v < VEC; ++v) k[v] = 0.f;
      }
#pragma unroll
      for (int g = 0; g < GMAX; ++g) {
        float dot = 0.f;
#pragma unroll
        for (int v = 0; v < VEC; ++v) dot = fmaf(qr[g][v], k[v], dot);
#pragma unroll
        for (int o = LPT / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        dot = softcap_score(dot, softcap_log2);
        if (valid && li == 0) {
          smem[i * GMAX + g] = dot;
          lmax[g] = fmaxf(lmax[g], dot);
        }
      }
    }
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      const float w = warp_max(lmax[g]);
      if (lane == 0) red[warp][g] = w;
    }
    __syncthreads();
    float alpha[GMAX];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
      float cm = red[0][g];
#pragma unroll
      for (int w = 1; w < DEC_WARPS; ++w) cm = fmaxf(cm, red[w][g]);
      const float m_new = fmaxf(m[g], cm);
      alpha[g] = exp2f(m[g] - m_new);  // 0 on the first chunk (m = -inf)
      m[g] = m_new;
    }
    // Phase 1b: probabilities (relative to the running max) in place; this thread always sees head my_g.
    float my_alpha = alpha[0], my_m = m[0];
#pragma unroll
    for (int g = 1; g < GMAX; ++g)
      if (g == my_g) {
        my_alpha = alpha[g];
        my_m = m[g];
      }
    float psum = 0.f;
    for (int e = tid; e < n * GMAX; e += DEC_THREADS) {
      const float p = exp2f(smem[e] - my_m);
      smem[e] = p;
      psum += p;
    }
    lsum = lsum * my_alpha + psum;
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[g][v] *= alpha[g];
    __syncthreads();
    // Phase 2: acc += p * V over the chunk.
    for (int base = warp * TPW; base < n; base += STEP) {
      const int i = base + grp;
      if (i < n) {
        const int pos = c0 + i;
        const int64_t blk = table[pos / block_size];
        float vv[VEC];
        load_f<T, VEC>(vc + (blk * block_stride + head_row + pos % block_size) * D + li * VEC, vv);
        const Pack<float, GMAX> p = *reinterpret_cast<const Pack<float, GMAX>*>(&smem[i * GMAX]);
#pragma unroll
        for (int g = 0; g < GMAX; ++g)
#pragma unroll
          for (int v = 0; v < VEC; ++v) acc[g][v] = fmaf(p.v[g], vv[v], acc[g][v]);
      }
    }
    __syncthreads();
  }

  // Merge the token groups of each warp, then the warps through shared memory.
#pragma unroll
  for (int o = LPT; o < 32; o <<= 1)
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
#pragma unroll
      for (int v = 0; v < VEC; ++v) acc[g][v] += __shfl_xor_sync(0xffffffffu, acc[g][v], o);
  if (grp == 0) {
#pragma unroll
    for (int g = 0; g < GMAX; ++g)
#pragma unroll
      for (int v = 0; v < VEC; ++v) smem[(warp * GMAX + g) * D + li * VEC + v] = acc[g][v];
  }
  // Probability sums: lanes with the same tid % GMAX hold the same head.
#pragma unroll
  for (int o = GMAX; o < 32; o <<= 1) lsum += __shfl_xor_sync(0xffffffffu, lsum, o);
  if (lane < GMAX) red[warp][lane] = lsum;
  __syncthreads();
  const int num_parts = gridDim.z;
  for (int e = tid; e < gcount * D; e += DEC_THREADS) {
    const int g = e / D, d = e % D;
    float a = 0.f, l = 0.f;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; ++w) {
      a += smem[(w * GMAX + g) * D + d];
      l += red[w][g];
    }
    const int64_t row = (int64_t)t * num_heads + kvh * group + g0 + g;
    if (partition_size == 0) {
      out[row * D + d] = from_f<T>(a / l);
    } else {
      const int64_t pr = row * num_parts + blockIdx.z;
      part_acc[pr * D + d] = a;
      if (d == 0) {
        float mg = m[0];
#pragma unroll
        for (int gg = 1; gg < GMAX; ++gg)
          if (gg == g) mg = m[gg];
        part_ml[pr * 2] = mg;
        part_ml[pr * 2 + 1] = l;
      }
    }
  }
}

// Combines the partitions of the split-K decode: grid (num_tokens, num_heads), block >= 32 threads over D.
template <typename T>
__device__ __forceinline__ void paged_attention_reduce(T* __restrict__ out, const float* __restrict__ part_acc,
                                                       const float* __restrict__ part_ml,
                                                       const uint32_t* __restrict__ context_lens,
                                                       const uint32_t* __restrict__ qsl, int num_seqs,
                                                       int num_heads, int head_size, int num_parts,
                                                       int partition_size, int only_single, int window) {
  const uint32_t t = blockIdx.x;
  const int s = seq_of_token(qsl, num_seqs, t);
  const int q_len = (int)(qsl[s + 1] - qsl[s]);
  if (only_single && q_len != 1) return;
  const int visible = (int)context_lens[s] - q_len + (int)(t - qsl[s]) + 1;
  const int seen = visible - window_start(visible, window);
  const int parts = min(num_parts, (seen + partition_size - 1) / partition_size);
  const int64_t row = (int64_t)t * num_heads + blockIdx.y;
  const float* ml = part_ml + row * num_parts * 2;
  float mx = -INFINITY;
  for (int p = 0; p < parts; ++p) mx = fmaxf(mx, ml[p * 2]);
  float l = 0.f;
  for (int p = 0; p < parts; ++p) l += exp2f(ml[p * 2] - mx) * ml[p * 2 + 1];
  const float inv = 1.f / l;
  for (int d = threadIdx.x; d < head_size; d += blockDim.x) {
    float a = 0.f;
    for (int p = 0; p < parts; ++p) a += exp2f(ml[p * 2] - mx) * part_acc[(row * num_parts + p) * head_size + d];
    out[row * head_size + d] = from_f<T>(a * inv);
  }
}

// ------------------------------------------------------------------------------------------------------------
// Prefill / mixed-batch kernel (tensor cores).
constexpr int PF_BM = INDUS_PREFILL_BM;  // query tokens per CTA (PF_WARPS x 16 rows)
constexpr int PF_BN = INDUS_PREFILL_BN;  // keys per tile
constexpr int PF_WARPS = INDUS_PREFILL_WARPS;
constexpr int PF_THREADS = INDUS_PREFILL_THREADS;
constexpr int PF_PAD = 8;  // elements of padding per shared-memory row: conflict-free ldmatrix
// Each warp owns 16 query rows of the tile (one m16n8k16 row block; the epilogue writes rows warp * 16 + qg and
// + 8), so the warps cover the tile exactly.
static_assert(PF_WARPS * 16 == PF_BM, "prefill: warps x 16 rows must be the query tile");
static_assert(PF_THREADS == PF_WARPS * 32, "prefill: whole warps");
// The Q tile is staged through sK (PF_BN rows) on its way to registers.
static_assert(PF_BM <= PF_BN, "prefill: the Q tile must fit in the K tile's shared memory");
static_assert(PF_BN % 16 == 0, "prefill: keys per tile in whole k16 steps");

template <typename T> struct Mma;
template <> struct Mma<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};
template <> struct Mma<__half> {
  __device__ __forceinline__ static void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}
// 16-byte global -> shared copy; zero-fills when !valid.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Gathers BN rows (positions n0..n0+BN) of one KV head from the paged cache into shared memory.
template <typename T, int D>
__device__ __forceinline__ void load_kv_tile(T* dst, const T* __restrict__ cache, const uint32_t* table, int n0,
                                             int n_end, int64_t block_stride, int64_t head_row, int block_size) {
  constexpr int CPR = D / 8;  // 16-byte chunks per row
  for (int c = threadIdx.x; c < PF_BN * CPR; c += PF_THREADS) {
    const int r = c / CPR, cc = c % CPR;
    const int pos = n0 + r;
    const bool valid = pos < n_end;
    const T* src = cache;
    if (valid) {
      const int64_t blk = table[pos / block_size];
      src = cache + (blk * block_stride + head_row + pos % block_size) * D + cc * 8;
    }
    cp_async16(dst + r * (D + PF_PAD) + cc * 8, src, valid);
  }
}

// grid: (num_tokens / BM + num_seqs, num_heads); tile b of the x axis belongs to the largest sequence s with
// qsl[s] / BM + s <= b (an upper bound of the tiles before it), surplus tiles exit at once.
template <typename T, int D>
__device__ __forceinline__ void paged_attention_prefill(
    T* __restrict__ out, const T* __restrict__ q, const T* __restrict__ kc, const T* __restrict__ vc,
    const uint32_t* __restrict__ block_tables, const uint32_t* __restrict__ context_lens,
    const uint32_t* __restrict__ qsl, int num_seqs, int num_heads, int num_kv_heads, int block_size,
    int max_blocks, float scale_log2, int skip_single, int window, float softcap_log2) {
  static_assert(D % 16 == 0, "head size must be a multiple of 16");
  constexpr int LD = D + PF_PAD;
  __shared__ __align__(16) T sK[PF_BN * LD];
  __shared__ __align__(16) T sV[PF_BN * LD];

  const int tile = blockIdx.x;
  const int h = blockIdx.y;
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if ((int)(qsl[mid] / PF_BM) + mid <= tile) lo = mid;
    else hi = mid - 1;
  }
  const int s = lo;
  const int q_start = (int)qsl[s];
  const int q_len = (int)qsl[s + 1] - q_start;
  const int m0 = (tile - (q_start / PF_BM + s)) * PF_BM;
  if (m0 < 0 || m0 >= q_len || (skip_single && q_len == 1)) return;
  const int ctx = (int)context_lens[s];
  const int first_pos = ctx - q_len;  // position of query token 0 of this sequence
  const int kvh = h / (num_heads / num_kv_heads);
  const uint32_t* table = block_tables + (int64_t)s * max_blocks;
  const int64_t block_stride = (int64_t)num_kv_heads * block_size;
  const int64_t head_row = (int64_t)kvh * block_size;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int qg = lane >> 2, qt = lane & 3;  // mma fragment coordinates

  // Q tile -> shared (through sK) -> registers as A fragments.
  {
    constexpr int CPR = D / 8;
    for (int c = tid; c < PF_BM * CPR; c += PF_THREADS) {
      const int r = c / CPR, cc = c % CPR;
      const bool valid = m0 + r < q_len;
      const T* src = valid ? q + ((int64_t)(q_start + m0 + r) * num_heads + h) * D + cc * 8 : q;
      cp_async16(sK + r * LD + cc * 8, src, valid);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
  }
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    ldmatrix_x4(qf[kk], sK + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
  __syncthreads();

  float oacc[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.f;
  float mrow[2] = {-INFINITY, -INFINITY};
  float lrow[2] = {0.f, 0.f};
  // Positions of this thread's two rows.
  const int qpos0 = first_pos + m0 + warp * 16 + qg;
  const int qpos1 = qpos0 + 8;
  const int n_end = first_pos + min(m0 + PF_BM, q_len);  // keys the last row of the tile sees
  // Keys before the window of the tile's first row are seen by no row of the tile: start at that row's
  // window, rounded down to a whole tile.
  const int n_first = window_start(first_pos + m0 + 1, window) / PF_BN * PF_BN;
  const int lo0 = window_start(qpos0 + 1, window), lo1 = window_start(qpos1 + 1, window);

  for (int n0 = n_first; n0 < n_end; n0 += PF_BN) {
    load_kv_tile<T, D>(sK, kc, table, n0, n_end, block_stride, head_row, block_size);
    cp_async_commit();
    load_kv_tile<T, D>(sV, vc, table, n0, n_end, block_stride, head_row, block_size);
    cp_async_commit();
    cp_async_wait<1>();  // K landed; V may still be in flight
    __syncthreads();

    float sacc[PF_BN / 8][4];
#pragma unroll
    for (int i = 0; i < PF_BN / 8; ++i) sacc[i][0] = sacc[i][1] = sacc[i][2] = sacc[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int j = 0; j < PF_BN / 16; ++j) {
        uint32_t b[4];
        ldmatrix_x4(b, sK + (j * 16 + (lane & 7) + (lane >> 4) * 8) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
        Mma<T>::run(sacc[2 * j], qf[kk], b[0], b[1]);
        Mma<T>::run(sacc[2 * j + 1], qf[kk], b[2], b[3]);
      }
    }
    // Scale, soft-cap, causal and window mask, online softmax (rows qg and qg + 8 of this warp's 16).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nb = 0; nb < PF_BN / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int key = n0 + nb * 8 + 2 * qt + (c & 1);
        const int qp = c < 2 ? qpos0 : qpos1;
        const int lo = c < 2 ? lo0 : lo1;
        const float v =
            key <= qp && key >= lo ? softcap_score(sacc[nb][c] * scale_log2, softcap_log2) : -INFINITY;
        sacc[nb][c] = v;
        mx[c >> 1] = fmaxf(mx[c >> 1], v);
      }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      // A row can have every key of a tile masked before its first visible key arrives (a window that starts
      // past this tile, or a row past the sequence's end): m stays -inf and its probabilities must be 0, not
      // exp2(-inf - -inf) = NaN, so such a row keeps its (empty) sums until it has seen a key.
      const float m_new = fmaxf(mrow[r], mx[r]);
      alpha[r] = m_new == -INFINITY ? 1.f : exp2f(mrow[r] - m_new);
      mrow[r] = m_new;
    }
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int nb = 0; nb < PF_BN / 8; ++nb)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float mr = mrow[c >> 1];
        const float p = mr == -INFINITY ? 0.f : exp2f(sacc[nb][c] - mr);
        sacc[nb][c] = p;
        rs[c >> 1] += p;
      }
#pragma unroll
    for (int r = 0; r < 2; ++r) lrow[r] = lrow[r] * alpha[r] + rs[r];
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      oacc[i][0] *= alpha[0];
      oacc[i][1] *= alpha[0];
      oacc[i][2] *= alpha[1];
      oacc[i][3] *= alpha[1];
    }
    cp_async_wait<0>();
    __syncthreads();
    // O += P V: P from the score accumulators (C layout == A layout pairwise), V through ldmatrix.trans.
#pragma unroll
    for (int kk = 0; kk < PF_BN / 16; ++kk) {
      uint32_t a[4];
      a[0] = Mma<T>::pack(sacc[2 * kk][0], sacc[2 * kk][1]);
      a[1] = Mma<T>::pack(sacc[2 * kk][2], sacc[2 * kk][3]);
      a[2] = Mma<T>::pack(sacc[2 * kk + 1][0], sacc[2 * kk + 1][1]);
      a[3] = Mma<T>::pack(sacc[2 * kk + 1][2], sacc[2 * kk + 1][3]);
#pragma unroll
      for (int j = 0; j < D / 16; ++j) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + j * 16 + (lane >> 4) * 8);
        Mma<T>::run(oacc[2 * j], a, b[0], b[1]);
        Mma<T>::run(oacc[2 * j + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // sK / sV are overwritten by the next tile
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 1);
    lrow[r] += __shfl_xor_sync(0xffffffffu, lrow[r], 2);
  }
  const int r0 = m0 + warp * 16 + qg;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = r0 + r * 8;
    if (row >= q_len) continue;
    const float inv = 1.f / lrow[r];
    T* o = out + ((int64_t)(q_start + row) * num_heads + h) * D + 2 * qt;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      Pack<T, 2> p;
      p.v[0] = from_f<T>(oacc[i][2 * r] * inv);
      p.v[1] = from_f<T>(oacc[i][2 * r + 1] * inv);
      store_pack<T, 2>(o + i * 8, p);
    }
  }
}

}  // namespace

#define INDUS_PA_DECODE(T, NAME, D, G)                                                                         \
  extern "C" __global__ void __launch_bounds__(DEC_THREADS) paged_attention_decode_##NAME##_d##D##_g##G(      \
      T* out, float* part_acc, float* part_ml, const T* q, const T* kc, const T* vc, const uint32_t* bt,       \
      const uint32_t* cl, const uint32_t* qsl, int num_seqs, int num_heads, int num_kv_heads, int block_size,  \
      int max_blocks, float scale_log2, int partition_size, int only_single, int window,                       \
      float softcap_log2) {                                                                                    \
    paged_attention_decode<T, D, G>(out, part_acc, part_ml, q, kc, vc, bt, cl, qsl, num_seqs, num_heads,       \
                                    num_kv_heads, block_size, max_blocks, scale_log2, partition_size,          \
                                    only_single, window, softcap_log2);                                        \
  }
// Instances: every decode head size x every group size of indus_shared.cuh (the lists plan_attention picks from).
#define INDUS_PA_DECODE_G(T, NAME, D) INDUS_FOR_EACH_DECODE_GROUP(INDUS_PA_DECODE, T, NAME, D)
#define INDUS_PA(T, NAME)                                                                                        \
  INDUS_FOR_EACH_DECODE_HEAD_SIZE(INDUS_PA_DECODE_G, T, NAME)                                                    \
  extern "C" __global__ void paged_attention_reduce_##NAME(T* out, const float* part_acc, const float* part_ml, \
                                                           const uint32_t* cl, const uint32_t* qsl, int num_seqs,  \
                                                           int num_heads, int head_size, int num_parts,         \
                                                           int partition_size, int only_single, int window) {   \
    paged_attention_reduce<T>(out, part_acc, part_ml, cl, qsl, num_seqs, num_heads, head_size, num_parts,       \
                              partition_size, only_single, window);                                             \
  }
INDUS_FOR_EACH_DTYPE(INDUS_PA)

#define INDUS_PA_PREFILL(T, NAME, D)                                                                         \
  extern "C" __global__ void __launch_bounds__(PF_THREADS) paged_attention_prefill_##NAME##_d##D(            \
      T* out, const T* q, const T* kc, const T* vc, const uint32_t* bt, const uint32_t* cl, const uint32_t* qsl, \
      int num_seqs, int num_heads, int num_kv_heads, int block_size, int max_blocks, float scale_log2,         \
      int skip_single, int window, float softcap_log2) {                                                       \
    paged_attention_prefill<T, D>(out, q, kc, vc, bt, cl, qsl, num_seqs, num_heads, num_kv_heads, block_size, \
                                  max_blocks, scale_log2, skip_single, window, softcap_log2);                 \
  }
INDUS_FOR_EACH_PREFILL_HEAD_SIZE(INDUS_PA_PREFILL, __nv_bfloat16, bf16)
INDUS_FOR_EACH_PREFILL_HEAD_SIZE(INDUS_PA_PREFILL, __half, f16)
