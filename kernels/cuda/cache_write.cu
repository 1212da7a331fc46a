// reshape_and_cache: writes the step's new keys (or values) [tokens, kv_heads, head_size] into their slots of
// the paged cache [num_blocks, kv_heads, block_size, head_size]. Reference: kernels/src/cache_write.rs.
// One block per token; each thread moves 16-byte chunks (VEC elements). Slots < 0 are padding and skipped;
// a slot past the cache's capacity is skipped too (the CPU reference fails on it; a kernel cannot).
#include "common.cuh"
using namespace indus;

template <typename T, int VEC>
__device__ __forceinline__ void reshape_and_cache(const T* __restrict__ src, T* __restrict__ cache,
                                                  const int64_t* __restrict__ slots, int num_kv_heads,
                                                  int head_size, int block_size, long long capacity) {
  const int t = blockIdx.x;
  const int64_t slot = slots[t];
  if (slot < 0 || slot >= capacity) return;
  const int64_t block = slot / block_size;
  const int64_t off = slot % block_size;
  const int per_token = num_kv_heads * head_size;
  const T* s = src + (int64_t)t * per_token;
  for (int e = threadIdx.x * VEC; e < per_token; e += blockDim.x * VEC) {
    const int h = e / head_size, d = e % head_size;
    T* dst = cache + ((block * num_kv_heads + h) * block_size + off) * (int64_t)head_size + d;
    store_pack<T, VEC>(dst, load_pack<T, VEC>(s + e));
  }
}

#define INDUS_CACHE_WRITE(T, NAME)                                                                          \
  extern "C" __global__ void reshape_and_cache_##NAME(const T* src, T* cache, const int64_t* slots, int kvh, \
                                                      int hs, int bs, long long cap) {                     \
    reshape_and_cache<T, Vec16<T>::N>(src, cache, slots, kvh, hs, bs, cap);                                 \
  }                                                                                                         \
  extern "C" __global__ void reshape_and_cache_##NAME##_scalar(const T* src, T* cache, const int64_t* slots, \
                                                               int kvh, int hs, int bs, long long cap) {    \
    reshape_and_cache<T, 1>(src, cache, slots, kvh, hs, bs, cap);                                           \
  }
INDUS_FOR_EACH_DTYPE(INDUS_CACHE_WRITE)
