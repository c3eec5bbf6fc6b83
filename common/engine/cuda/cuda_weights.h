// The model's weights on the device, bf16, with the projections that read
// the same input fused into one matrix each (q/k/v, gate/up), so a layer
// is four matrix products.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "common/engine/cuda/device_buffer.h"
#include "common/model/model_config.h"
#include "common/model/weight_store.h"

namespace tandem {

struct CudaLayerWeights {
  DeviceBuffer attn_norm, wqkv, bqkv, wo, ffn_norm, w_gate_up, w_down;
};

struct CudaWeights {
  DeviceBuffer embed, final_norm, lm_head;  // lm_head empty when tied
  std::vector<CudaLayerWeights> layers;
  int64_t bytes = 0;

  const DeviceBuffer& output() const { return lm_head.get() != nullptr ? lm_head : embed; }
};

// Uploads every tensor the config names, checking shapes; other dtypes
// are converted to bf16 on the host first. Logs progress per layer.
absl::Status UploadWeights(const ModelConfig& config, const WeightStore& store, CudaWeights* out);

}  // namespace tandem
