// How the CUDA IPC gather kernel (cuda_block_copy.cu) splits one launch
// into equal work items, as plain inline functions that both the kernel
// and a CPU unit test use (tests/common/transport/kv_copy_items_test.cc
// checks that the items cover every word of every block once).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define TANDEM_KV_COPY_HD __host__ __device__
#else
#define TANDEM_KV_COPY_HD
#endif

namespace tandem {

// One work item: up to this many 16-byte words of one block (32 KB: one
// Llama-3-8B block of bf16 K or V, 8 heads x 128 x 16 tokens), moved by
// one bulk copy into a shared-memory stage and one out of it; larger
// blocks split into several items, which other SMs share.
inline constexpr uint64_t kKvCopyItemWords = 2048;

struct KvCopyShape {
  uint64_t words_per_block = 0;  // 16-byte words
  uint64_t chunks = 0;           // items per block
  uint64_t per_layer = 0;        // items per layer: K and V of every pair
  uint64_t items = 0;            // in the launch
};

// Item order: layer (index into the launch's list), pair, K then V, chunk
// of the block; consecutive items are consecutive memory within a block.
struct KvCopyItem {
  uint64_t layer = 0;
  uint64_t pair = 0;
  bool value = false;
  uint64_t first_word = 0;  // within the block
  uint64_t words = 0;       // 1..kKvCopyItemWords
};

TANDEM_KV_COPY_HD inline KvCopyShape MakeKvCopyShape(uint64_t block_bytes, int32_t num_pairs, int32_t num_layers) {
  KvCopyShape s;
  s.words_per_block = block_bytes / 16;
  s.chunks = (s.words_per_block + kKvCopyItemWords - 1) / kKvCopyItemWords;
  s.per_layer = 2 * static_cast<uint64_t>(num_pairs > 0 ? num_pairs : 0) * s.chunks;
  s.items = s.per_layer * static_cast<uint64_t>(num_layers > 0 ? num_layers : 0);
  return s;
}

// `item` < s.items.
TANDEM_KV_COPY_HD inline KvCopyItem KvCopyItemAt(const KvCopyShape& s, uint64_t item) {
  KvCopyItem it;
  it.layer = item / s.per_layer;
  uint64_t r = item - it.layer * s.per_layer;
  const uint64_t chunk = r % s.chunks;
  r /= s.chunks;
  it.value = (r & 1) != 0;
  it.pair = r >> 1;
  it.first_word = chunk * kKvCopyItemWords;
  const uint64_t left = s.words_per_block - it.first_word;
  it.words = left < kKvCopyItemWords ? left : kKvCopyItemWords;
  return it;
}

}  // namespace tandem
