// GenerationConfig: a model's generation_config.json, the defaults its
// authors tuned it for. Its eos_token_id (one id or a list; Llama 3
// Instruct ends turns with <|eot_id|>, listed only here) joins config.json's
// EOS ids, and its sampling values apply to requests that leave those
// fields unset. Immutable once loaded; read from any thread.
#ifndef TANDEM_COMMON_MODEL_GENERATION_CONFIG_H_
#define TANDEM_COMMON_MODEL_GENERATION_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

struct GenerationConfig {
  std::vector<int32_t> eos_token_ids;
  // do_sample=false in the file makes the default temperature 0 (greedy);
  // an absent do_sample leaves temperature as the file sets it.
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int32_t> top_k;
  std::optional<float> repetition_penalty;

  bool has_sampling_defaults() const {
    return temperature.has_value() || top_p.has_value() || top_k.has_value() || repetition_penalty.has_value();
  }
};

// <model_dir>/generation_config.json; an empty config when the file is
// absent. INVALID_ARGUMENT naming the file and field for malformed JSON or
// out-of-range values (temperature < 0, top_p outside (0, 1], top_k < -1,
// repetition_penalty <= 0, negative ids).
absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& model_dir);
absl::StatusOr<GenerationConfig> ParseGenerationConfig(const std::string& json_text, const std::string& source);

// config.json's EOS ids, then generation_config.json's not already listed.
std::vector<int32_t> MergeEosIds(const std::vector<int64_t>& model_eos_ids, const GenerationConfig& generation);

// Which sampling fields a request set itself (proto3 presence, or a flag
// given on the command line); the others take the model's defaults.
struct SamplingFieldsSet {
  bool temperature = false;
  bool top_p = false;
  bool top_k = false;
  bool repetition_penalty = false;
};

void ApplySamplingDefaults(const GenerationConfig& defaults, const SamplingFieldsSet& set, float* temperature,
                           float* top_p, int32_t* top_k, float* repetition_penalty);

}  // namespace tandem

#endif  // TANDEM_COMMON_MODEL_GENERATION_CONFIG_H_
