// The device KV pool: one allocation; per layer a K and a V array of
// [num_blocks + 1][block_size][kv_heads][head_dim] bf16. The extra last
// block is the trash block: padded rows of a replayed CUDA graph write
// their K/V there, so it is never handed out (num_blocks() excludes it).
#pragma once

#include <cuda_bf16.h>

#include "common/engine/cuda/device_buffer.h"
#include "common/engine/model_backend.h"
#include "common/util/status_macros.h"

namespace tandem {

class CudaKvPool final : public KvPoolView {
 public:
  absl::Status Init(const KvLayout& layout, int32_t num_blocks) {
    layout_ = layout;
    num_blocks_ = num_blocks;
    TANDEM_RETURN_IF_ERROR(buffer_.Allocate(static_cast<size_t>(layout.block_bytes_all_layers()) * (num_blocks + 1)));
    return CudaStatus(cudaMemset(buffer_.get(), 0, buffer_.bytes()), "cudaMemset(KV pool)");
  }
  const KvLayout& layout() const override { return layout_; }
  int32_t num_blocks() const override { return num_blocks_; }
  int32_t trash_block() const { return num_blocks_; }
  void* KeyBlock(int layer, int32_t block) override { return Base(layer, 0) + block * layout_.block_bytes(); }
  void* ValueBlock(int layer, int32_t block) override { return Base(layer, 1) + block * layout_.block_bytes(); }
  bool on_device() const override { return true; }
  __nv_bfloat16* Key(int layer) { return reinterpret_cast<__nv_bfloat16*>(Base(layer, 0)); }
  __nv_bfloat16* Value(int layer) { return reinterpret_cast<__nv_bfloat16*>(Base(layer, 1)); }
  int64_t bytes() const { return static_cast<int64_t>(buffer_.bytes()); }

 private:
  char* Base(int layer, int kv) {
    return buffer_.as<char>() + (static_cast<int64_t>(layer) * 2 + kv) * (num_blocks_ + 1) * layout_.block_bytes();
  }
  KvLayout layout_;
  int32_t num_blocks_ = 0;
  DeviceBuffer buffer_;
};

}  // namespace tandem
