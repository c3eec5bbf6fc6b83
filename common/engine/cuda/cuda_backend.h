// The CUDA implementation of ModelBackend: bf16 weights and KV cache in
// device memory, fp32 accumulation, cuBLAS for the matrix products and the
// kernels of cuda_kernels.h for the rest. This header needs no CUDA
// headers, so CPU-only code can name the factory.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/engine/model_backend.h"
#include "common/model/weight_store.h"

namespace tandem {

struct CudaBackendOptions {
  int device = 0;
  int32_t block_size = 16;
  // KV pool size: an explicit block count, or (when 0) this fraction of
  // the device memory left free after the weights.
  int32_t num_kv_blocks = 0;
  double kv_memory_fraction = 0.85;
  // Longest context one sequence may reach (sizes attention scratch).
  int64_t max_context = 8192;
};

absl::StatusOr<std::unique_ptr<ModelBackend>> CreateCudaBackend(const ModelConfig& config, const WeightStore& weights,
                                                                const CudaBackendOptions& options);

}  // namespace tandem
