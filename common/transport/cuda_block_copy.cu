#include "common/transport/cuda_block_copy.h"

namespace tandem {
namespace {

constexpr int kThreads = 256;
constexpr int kInFlight = 8;  // 16-byte loads per thread issued before the first store

// blockIdx.x: the pair; blockIdx.y: 0 for K, 1 for V. Threads stride over
// the block's 16-byte words, so consecutive threads touch consecutive
// words on both sides (coalesced reads and writes, local or peer memory);
// each thread loads kInFlight words before storing them, so a KV block
// (tens of KB) moves in one or two memory round trips, not one per word.
__global__ void __launch_bounds__(kThreads) KvBlockCopyKernel(const int32_t* table, const uint4* src_k,
                                                              const uint4* src_v, uint4* dst_k, uint4* dst_v,
                                                              uint64_t words_per_block) {
  const int32_t src_block = table[2 * blockIdx.x];
  const int32_t dst_block = table[2 * blockIdx.x + 1];
  const uint4* src = (blockIdx.y == 0 ? src_k : src_v) + static_cast<uint64_t>(src_block) * words_per_block;
  uint4* dst = (blockIdx.y == 0 ? dst_k : dst_v) + static_cast<uint64_t>(dst_block) * words_per_block;
  for (uint64_t i0 = threadIdx.x; i0 < words_per_block; i0 += kThreads * kInFlight) {
    uint4 w[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const uint64_t i = i0 + static_cast<uint64_t>(u) * kThreads;
      if (i < words_per_block) w[u] = __ldcs(src + i);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const uint64_t i = i0 + static_cast<uint64_t>(u) * kThreads;
      if (i < words_per_block) dst[i] = w[u];
    }
  }
}

}  // namespace

bool KvBlockCopyAligned(const void* src_k, const void* src_v, const void* dst_k, const void* dst_v,
                        uint64_t block_bytes) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return block_bytes % 16 == 0 && aligned(src_k) && aligned(src_v) && aligned(dst_k) && aligned(dst_v);
}

cudaError_t LaunchKvBlockCopy(const int32_t* table, int32_t n, const void* src_k, const void* src_v, void* dst_k,
                              void* dst_v, uint64_t block_bytes, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(n), 2);
  KvBlockCopyKernel<<<grid, kThreads, 0, stream>>>(table, static_cast<const uint4*>(src_k),
                                              static_cast<const uint4*>(src_v), static_cast<uint4*>(dst_k),
                                              static_cast<uint4*>(dst_v), block_bytes / 16);
  return cudaGetLastError();
}

}  // namespace tandem
