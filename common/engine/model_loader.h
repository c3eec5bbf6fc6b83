// Turns "which model" (a checkpoint directory, the built-in default, or
// random weights for a config) into the pieces a process serves with: the
// config, a weight store, the tokenizer, and a backend over them.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/engine/model_backend.h"
#include "common/model/generation_config.h"
#include "common/model/model_config.h"
#include "common/model/weight_store.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem {

struct ModelSource {
  // A Hugging Face model directory (config.json, *.safetensors,
  // tokenizer.json). Empty: tandem's built-in default model.
  std::string model_dir;
  // Random weights of the config's shapes instead of the safetensors files
  // (vLLM's load_format=dummy): the directory needs only config.json and
  // tokenizer.json.
  bool dummy_weights = false;
  uint64_t dummy_seed = 0;
};

struct LoadedModel {
  std::string name;  // the directory's base name, or "tandem-default"
  std::string dir;
  // config.json, with generation_config.json's EOS ids merged into
  // eos_token_ids (so every stop check sees them).
  ModelConfig config;
  // generation_config.json (empty when the model has none): the sampling
  // defaults for requests that leave them unset.
  GenerationConfig generation;
  std::unique_ptr<WeightStore> weights;
  std::unique_ptr<Tokenizer> tokenizer;
  // Set for dummy weights (part of the fingerprint).
  std::optional<uint64_t> dummy_seed;
};

// Reads and validates config, tokenizer and (unless dummy) every tensor's
// name and shape, so a bad checkpoint fails here with a clear message.
absl::StatusOr<LoadedModel> LoadModel(const ModelSource& source);

// "auto" (unset), "on"/"true" or "off"/"false": the value of a
// --cpu_bf16_activations flag. INVALID_ARGUMENT for anything else.
absl::StatusOr<std::optional<bool>> ParseBf16ActivationsFlag(std::string_view value);

// Identifies the weights a process serves, so that a prefill and a decode
// worker only exchange KV when they run the same model: a hash of the
// config, the tensor names, shapes and types, and for dummy weights their
// seed.
std::string ModelFingerprint(const LoadedModel& model);

struct BackendOptions {
  enum class Device { kCpu, kCuda };
  Device device = Device::kCpu;
  int32_t block_size = 16;
  // KV pool size in blocks. On CUDA, 0 sizes the pool from
  // gpu_memory_fraction instead.
  int32_t num_kv_blocks = 1024;
  int num_threads = 0;  // 0: hardware concurrency
  // CPU: round activations to bf16 as a bf16 model does
  // (CpuBackendOptions::bf16_activations); unset: on for bf16 weights.
  std::optional<bool> cpu_bf16_activations;
  int gpu = 0;          // CUDA device ordinal
  // CUDA: the share of the device's total memory this process may use
  // (weights, scratch and KV pool); the pool gets what is left of it. Two
  // workers sharing one GPU each take their own fraction (vLLM's
  // --gpu-memory-utilization).
  double gpu_memory_fraction = 0.9;
  bool cuda_graphs = true;  // CUDA: replay captured graphs for decode steps
  int32_t cuda_decode_min_partition = 0;  // CUDA: narrowest flash-decoding split (0: the backend's default)
  std::string cuda_gemm_algos;            // CUDA: tandem-gemm-tune's table (empty: cuBLASLt's heuristic)
};

absl::StatusOr<std::unique_ptr<ModelBackend>> CreateBackend(const LoadedModel& model,
                                                            const BackendOptions& options);

}  // namespace tandem
