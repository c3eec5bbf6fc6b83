#include "common/model/generation_config.h"

#include <algorithm>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/util/read_file.h"
#include "common/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace tandem {
namespace {

absl::Status Bad(const std::string& source, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

// A number field, or nullopt when absent or null.
absl::StatusOr<std::optional<double>> Number(const nlohmann::json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::optional<double>();
  if (!it->is_number()) return Bad(source, absl::StrCat(key, " is not a number"));
  return std::optional<double>(it->get<double>());
}

}  // namespace

absl::StatusOr<GenerationConfig> ParseGenerationConfig(const std::string& json_text, const std::string& source) {
  const nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad(source, "not a JSON object");
  GenerationConfig g;
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    const nlohmann::json ids = it->is_array() ? *it : nlohmann::json::array({*it});
    for (const auto& id : ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return Bad(source, absl::StrCat("eos_token_id ", id.dump(), " is not a token id"));
      }
      g.eos_token_ids.push_back(id.get<int32_t>());
    }
  }
  TANDEM_ASSIGN_OR_RETURN(std::optional<double> temperature, Number(j, "temperature", source));
  TANDEM_ASSIGN_OR_RETURN(std::optional<double> top_p, Number(j, "top_p", source));
  TANDEM_ASSIGN_OR_RETURN(std::optional<double> top_k, Number(j, "top_k", source));
  TANDEM_ASSIGN_OR_RETURN(std::optional<double> repetition_penalty, Number(j, "repetition_penalty", source));
  if (temperature && *temperature < 0) return Bad(source, "temperature is negative");
  if (top_p && (*top_p <= 0 || *top_p > 1)) return Bad(source, "top_p is outside (0, 1]");
  if (top_k && (*top_k < -1 || *top_k != static_cast<int64_t>(*top_k) || *top_k > INT32_MAX)) {
    return Bad(source, "top_k is not an integer >= -1");
  }
  if (repetition_penalty && *repetition_penalty <= 0) return Bad(source, "repetition_penalty is not positive");
  if (temperature) g.temperature = static_cast<float>(*temperature);
  if (top_p) g.top_p = static_cast<float>(*top_p);
  if (top_k) g.top_k = static_cast<int32_t>(*top_k);
  if (repetition_penalty) g.repetition_penalty = static_cast<float>(*repetition_penalty);
  // transformers samples only with do_sample=true; with false its
  // temperature/top_p/top_k are ignored and decoding is greedy.
  if (auto it = j.find("do_sample"); it != j.end() && it->is_boolean() && !it->get<bool>()) {
    g.temperature = 0.0f;
    g.top_p.reset();
    g.top_k.reset();
  }
  return g;
}

absl::StatusOr<GenerationConfig> LoadGenerationConfig(const std::string& model_dir) {
  const std::string path = model_dir + "/generation_config.json";
  if (!std::filesystem::exists(path)) return GenerationConfig();
  TANDEM_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(path));
  return ParseGenerationConfig(text, path);
}

std::vector<int32_t> MergeEosIds(const std::vector<int64_t>& model_eos_ids, const GenerationConfig& generation) {
  std::vector<int32_t> ids;
  for (int64_t id : model_eos_ids) ids.push_back(static_cast<int32_t>(id));
  for (int32_t id : generation.eos_token_ids) {
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  }
  return ids;
}

void ApplySamplingDefaults(const GenerationConfig& defaults, const SamplingFieldsSet& set, float* temperature,
                           float* top_p, int32_t* top_k, float* repetition_penalty) {
  if (!set.temperature && defaults.temperature) *temperature = *defaults.temperature;
  if (!set.top_p && defaults.top_p) *top_p = *defaults.top_p;
  if (!set.top_k && defaults.top_k) *top_k = *defaults.top_k;
  if (!set.repetition_penalty && defaults.repetition_penalty) *repetition_penalty = *defaults.repetition_penalty;
}

}  // namespace tandem
