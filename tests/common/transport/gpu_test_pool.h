// GPU KV pools for the two-process transport tests (CUDA builds): a small
// layout, a fill where every 32-bit word is a function of a seed and its
// offset, the two transfers the NCCL test makes (many short runs and one
// long run), and the check that after a list of transfers a destination
// pool (any layout and size) holds exactly the source's words in the
// transferred blocks and its own everywhere else (the trash block
// included).
#pragma once

#include <cstdio>
#include <vector>

#include "absl/time/time.h"
#include "common/engine/cuda/cuda_kv_pool.h"
#include "common/transport/kv_transport.h"

namespace tandem {

inline constexpr int32_t kGpuTestBlocks = 64;

inline KvLayout GpuTestLayout() {
  KvLayout l;
  l.num_layers = 4;
  l.num_kv_heads = 2;
  l.head_dim = 64;
  l.block_size = 16;
  l.dtype = DType::kBF16;
  return l;
}

inline uint32_t GpuTestWord(uint32_t seed, size_t index) { return seed ^ static_cast<uint32_t>(index * 2654435761u); }

inline absl::Status FillGpuTestPool(CudaKvPool& pool, uint32_t seed) {
  std::vector<uint32_t> host(static_cast<size_t>(pool.bytes()) / 4);
  for (size_t i = 0; i < host.size(); ++i) host[i] = GpuTestWord(seed, i);
  return CudaStatus(cudaMemcpy(pool.KeyBlock(0, 0), host.data(), pool.bytes(), cudaMemcpyHostToDevice), "fill");
}

// Offset (in words) of block `b` of layer `l`, K (kv 0) or V, from the
// base of a pool of `layout` with `num_blocks` blocks: CudaKvPool keeps
// num_blocks + 1 blocks per array.
inline size_t GpuTestWordOffset(const KvLayout& layout, int32_t num_blocks, int l, int kv, int32_t b) {
  return ((static_cast<size_t>(l) * 2 + kv) * (num_blocks + 1) + b) * (layout.block_bytes() / 4);
}

// The two transfers: many short runs and one long run.
inline std::vector<KvTransferSpec> GpuTestSpecs(absl::Duration deadline) {
  KvTransferSpec scattered{"scattered", {}, {}, absl::Now() + deadline};
  for (int32_t i = 0; i < 20; ++i) {
    scattered.src_blocks.push_back(2 * i);
    scattered.dst_blocks.push_back(63 - 2 * i);
  }
  KvTransferSpec run{"run", {}, {}, absl::Now() + deadline};
  for (int32_t i = 0; i < 10; ++i) {
    run.src_blocks.push_back(41 + i);
    run.dst_blocks.push_back(2 + i);
  }
  return {scattered, run};
}

// Whether `pool` (filled with `dst_seed`) holds what `specs` copied, in
// order (a later transfer's block replaces an earlier one's), from a pool
// of the same layout and size filled with `src_seed`, and nothing else
// changed; prints the first wrong word.
inline bool GpuTestPoolHoldsTransfers(CudaKvPool& pool, const std::vector<KvTransferSpec>& specs, uint32_t src_seed,
                                      uint32_t dst_seed) {
  std::vector<uint32_t> got(static_cast<size_t>(pool.bytes()) / 4);
  if (cudaMemcpy(got.data(), pool.KeyBlock(0, 0), pool.bytes(), cudaMemcpyDeviceToHost) != cudaSuccess) return false;
  const KvLayout& layout = pool.layout();
  const int32_t blocks = pool.num_blocks();
  std::vector<int32_t> source_of(blocks + 1, -1);
  for (const KvTransferSpec& s : specs) {
    for (size_t i = 0; i < s.src_blocks.size(); ++i) source_of[s.dst_blocks[i]] = s.src_blocks[i];
  }
  const size_t words = layout.block_bytes() / 4;
  for (int l = 0; l < layout.num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int32_t b = 0; b <= blocks; ++b) {  // the trash block must be untouched too
        const bool copied = b < blocks && source_of[b] >= 0;
        const size_t at = GpuTestWordOffset(layout, blocks, l, kv, b);
        const size_t from = copied ? GpuTestWordOffset(layout, blocks, l, kv, source_of[b]) : at;
        const uint32_t seed = copied ? src_seed : dst_seed;
        for (size_t w = 0; w < words; ++w) {
          if (got[at + w] != GpuTestWord(seed, from + w)) {
            std::fprintf(stderr, "layer %d kv %d block %d word %zu wrong (%s)\n", l, kv, b, w,
                         copied ? "copied" : "untouched");
            return false;
          }
        }
      }
    }
  }
  return true;
}

}  // namespace tandem
