// The CPU backend's KV pool: one fp32 allocation holding, for every layer,
// a K and a V array of [num_blocks][block_size][num_kv_heads][head_dim].
#pragma once

#include <cstdint>
#include <vector>

#include "common/engine/model_backend.h"
#include "common/kv/kv_layout.h"

namespace tandem {

// Owned by the CpuBackend. Which blocks hold whose tokens is not known here
// (KvCacheManager's job); the pool only maps (layer, block) to memory.
class CpuKvPool final : public KvPoolView {
 public:
  CpuKvPool(const KvLayout& layout, int32_t num_blocks)
      : layout_(layout),
        num_blocks_(num_blocks),
        block_floats_(int64_t{layout.block_size} * layout.num_kv_heads * layout.head_dim),
        data_(static_cast<size_t>(2 * int64_t{layout.num_layers} * num_blocks * block_floats_), 0.0f) {}

  const KvLayout& layout() const override { return layout_; }
  int32_t num_blocks() const override { return num_blocks_; }
  void* KeyBlock(int layer, int32_t block) override { return Key(layer, block); }
  void* ValueBlock(int layer, int32_t block) override { return Value(layer, block); }
  bool on_device() const override { return false; }

  float* Key(int layer, int32_t block) { return Base(layer, 0, block); }
  float* Value(int layer, int32_t block) { return Base(layer, 1, block); }
  // Floats per block per layer for K (or V); a token's row of all kv heads
  // is num_kv_heads * head_dim floats at offset slot * that.
  int64_t block_floats() const { return block_floats_; }

 private:
  float* Base(int layer, int kv, int32_t block) {
    return data_.data() + ((int64_t{layer} * 2 + kv) * num_blocks_ + block) * block_floats_;
  }

  KvLayout layout_;
  int32_t num_blocks_;
  int64_t block_floats_;
  std::vector<float> data_;
};

}  // namespace tandem
