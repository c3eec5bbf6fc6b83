// The architecture hyper-parameters of a Llama-family model, read from a
// Hugging Face config.json (Llama 2/3/3.1/3.2, Mistral, Qwen2).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/dtype.h"

namespace tandem {

// rope_scaling of config.json. kNone: plain RoPE; kLlama3: the frequency-
// dependent scaling of Llama 3.1+ (factor, low/high_freq_factor,
// original_max_position_embeddings); kLinear: positions divided by factor.
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;

  bool operator==(const RopeScaling&) const = default;
};

struct ModelConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM", "Qwen2ForCausalLM"
  std::string model_type;    // e.g. "llama", "mistral", "qwen2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // == num_attention_heads without GQA
  int64_t head_dim = 0;             // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool attention_bias = false;      // q/k/v projections carry a bias (Qwen2)
  bool tie_word_embeddings = false; // lm_head shares embed_tokens
  DType torch_dtype = DType::kBF16;
  int64_t bos_token_id = -1;                // -1: none
  std::vector<int64_t> eos_token_ids;       // config.json allows int or list

  int64_t q_size() const { return num_attention_heads * head_dim; }
  int64_t kv_size() const { return num_key_value_heads * head_dim; }
  // Parameter count including embeddings (and lm_head unless tied).
  int64_t NumParameters() const;

  bool operator==(const ModelConfig&) const = default;
};

// Parses config.json text. `source` names the file in error messages.
// Unknown architectures, missing required fields and inconsistent shapes
// (heads not dividing hidden size, kv heads not dividing heads) are errors
// naming the field. Both the transformers 4 spelling (torch_dtype,
// rope_scaling, rope_theta) and the transformers 5 one (dtype,
// rope_parameters) are read.
absl::StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source);
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// Serializes to config.json as transformers writes it (used by the default
// model writer and by tests).
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace tandem
