// The shape of a paged KV cache. Prefill and decode workers must agree on it
// exactly before KV blocks may move between them.
#pragma once

#include <cstdint>
#include <string>

#include "common/model/dtype.h"
#include "common/model/model_config.h"

namespace tandem {

// Memory layout (both CPU and CUDA backends): for every layer, one K pool
// and one V pool, each [num_blocks][block_size][num_kv_heads][head_dim]
// elements of `dtype`. One block of one layer is therefore two contiguous
// ranges of block_bytes() each, which is what transports copy.
struct KvLayout {
  int32_t num_layers = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  int32_t block_size = 16;  // tokens per block
  DType dtype = DType::kF32;

  // Bytes of K (or of V) for one block of one layer.
  int64_t block_bytes() const {
    return int64_t{block_size} * num_kv_heads * head_dim * static_cast<int64_t>(DTypeSize(dtype));
  }
  // Bytes of K and V for one block across all layers.
  int64_t block_bytes_all_layers() const { return 2 * block_bytes() * num_layers; }
  int32_t BlocksForTokens(int64_t tokens) const {
    return static_cast<int32_t>((tokens + block_size - 1) / block_size);
  }
  bool operator==(const KvLayout&) const = default;
  std::string DebugString() const;
};

KvLayout KvLayoutFor(const ModelConfig& config, int32_t block_size, DType dtype);

}  // namespace tandem
