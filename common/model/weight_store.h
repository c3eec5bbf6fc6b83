// Where model weights come from: memory-mapped safetensors files or random
// "dummy" weights generated on demand. Backends pull tensors by Hugging Face
// name and convert them to their own layout and type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/dtype.h"
#include "common/model/model_config.h"

namespace tandem {

// A read-only view of one tensor in host memory. `keepalive` owns the bytes
// (an mmap of the file, or a buffer) so the view may outlive its store.
struct HostTensor {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::string source;  // file the tensor came from, for error messages
  std::shared_ptr<const void> keepalive;

  int64_t numel() const;
  // Converts the whole tensor to fp32 (out.size() must equal numel()).
  void ToFloat(float* out) const;
  std::vector<float> ToFloat() const;
};

// Name and shape of a tensor a model of a given config needs.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// The tensors a Llama-family model needs, with Hugging Face names
// ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
// ...). lm_head.weight is omitted when embeddings are tied; q/k/v biases
// are included when config.attention_bias.
std::vector<TensorSpec> ExpectedTensors(const ModelConfig& config);

class WeightStore {
 public:
  virtual ~WeightStore() = default;
  // NOT_FOUND naming the tensor when absent.
  virtual absl::StatusOr<HostTensor> Get(std::string_view name) const = 0;
  virtual std::vector<std::string> Names() const = 0;
};

// Get() plus a shape check; the error names the tensor, its file and both
// shapes.
absl::StatusOr<HostTensor> GetTensorChecked(const WeightStore& store, std::string_view name,
                                            const std::vector<int64_t>& shape);

// Checks that every tensor of ExpectedTensors(config) exists with the right
// shape, so a bad checkpoint fails at load with one clear message.
absl::Status ValidateWeights(const WeightStore& store, const ModelConfig& config);

// All *.safetensors files of `dir` (through model.safetensors.index.json
// when present), memory-mapped.
absl::StatusOr<std::unique_ptr<WeightStore>> OpenSafetensorsDir(const std::string& dir);

// Random weights for any config, like vLLM's load_format=dummy: each tensor
// is generated deterministically from (seed, name) when first asked for,
// uniform in [-scale, scale] (norm weights are 1 + small noise) in `dtype`.
std::unique_ptr<WeightStore> MakeDummyWeightStore(const ModelConfig& config, uint64_t seed,
                                                  DType dtype = DType::kBF16, float scale = 0.02f);

}  // namespace tandem
