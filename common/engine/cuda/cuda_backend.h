// The CUDA implementation of ModelBackend: bf16 weights and KV cache in
// device memory, fp32 accumulation, cuBLAS for the matrix products and the
// kernels of cuda_kernels.h for the rest. This header needs no CUDA
// headers, so CPU-only code can name the factory.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/engine/model_backend.h"
#include "common/model/weight_store.h"

namespace tandem {

struct CudaBackendOptions {
  int device = 0;
  int32_t block_size = 16;
  // KV pool size: an explicit block count, or (when 0) what is left of
  // gpu_memory_fraction x total device memory once the weights and the
  // forward scratch are allocated, less what other processes already use.
  int32_t num_kv_blocks = 0;
  double gpu_memory_fraction = 0.9;
  // Longest context one sequence may reach (sizes the graph scratch and
  // the decode tables).
  int64_t max_context = 8192;
  // Decode steps of up to 512 sequences replay CUDA graphs captured per
  // (padded batch size, context splits); off: every step is launched
  // kernel by kernel (same results).
  bool cuda_graphs = true;
  // The narrowest context split of flash-decoding (a power of two in
  // [32, 256]): small batches split their contexts down to it so that
  // the attention grid fills the GPU. 64 (one K/V tile per block) beat 32
  // and 128 at batch 1 and 4 on an H200 (docs/benchmarks.md).
  int32_t decode_min_partition = 64;
  // A GemmAlgoTable file from tandem-gemm-tune (empty: cuBLASLt's
  // heuristic for every GEMM). Ignored, with a warning, when it was tuned
  // on another kind of GPU.
  std::string gemm_algos;
};

absl::StatusOr<std::unique_ptr<ModelBackend>> CreateCudaBackend(const ModelConfig& config, const WeightStore& weights,
                                                                const CudaBackendOptions& options);

}  // namespace tandem
