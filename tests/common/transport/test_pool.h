// A host KV pool for transport tests, independent of any model backend.
// Every float holds a value unique to (pool tag, layer, K/V, block,
// element), so a misplaced or partial copy shows up as a byte mismatch.
#pragma once

#include <cstdint>
#include <vector>

#include "common/engine/model_backend.h"

namespace tandem {

class TestPool final : public KvPoolView {
 public:
  // `scattered`: each layer's K and V array is a separate allocation (as a
  // GPU or pinned-memory backend may have), instead of one vector.
  TestPool(KvLayout layout, int32_t blocks, float tag, bool scattered = false)
      : layout_(layout), blocks_(blocks), floats_per_block_(layout.block_bytes() / sizeof(float)) {
    const size_t array_floats = static_cast<size_t>(blocks_ * floats_per_block_);
    const int arrays = 2 * layout.num_layers;
    if (scattered) {
      for (int a = 0; a < arrays; ++a) storage_.emplace_back(array_floats);
    } else {
      storage_.emplace_back(array_floats * arrays);
    }
    for (int a = 0; a < arrays; ++a) {
      float* base = scattered ? storage_[a].data() : storage_[0].data() + a * array_floats;
      arrays_.push_back(base);
      for (size_t i = 0; i < array_floats; ++i) base[i] = tag + static_cast<float>(a * array_floats + i);
    }
  }

  const KvLayout& layout() const override { return layout_; }
  int32_t num_blocks() const override { return blocks_; }
  void* KeyBlock(int layer, int32_t block) override { return At(layer, 0, block); }
  void* ValueBlock(int layer, int32_t block) override { return At(layer, 1, block); }
  bool on_device() const override { return false; }

  // kv: 0 for K, 1 for V.
  float* At(int layer, int kv, int32_t block) { return arrays_[2 * layer + kv] + block * floats_per_block_; }

 private:
  KvLayout layout_;
  int32_t blocks_;
  int64_t floats_per_block_;
  std::vector<std::vector<float>> storage_;
  std::vector<float*> arrays_;  // per layer, K then V
};

inline KvLayout SmallLayout() {
  KvLayout l;
  l.num_layers = 3;
  l.num_kv_heads = 2;
  l.head_dim = 8;
  l.block_size = 4;
  l.dtype = DType::kF32;
  return l;
}

}  // namespace tandem
