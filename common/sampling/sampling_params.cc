#include "common/sampling/sampling_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size) {
  auto bad = [](std::string_view field, auto value, std::string_view rule) {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(field), " is ", value, "; it must be ", std::string(rule)));
  };
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) return bad("temperature", p.temperature, ">= 0");
  if (p.top_k < -1) return bad("top_k", p.top_k, ">= -1 (0 or -1 disable it)");
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return bad("top_p", p.top_p, "in (0, 1]");
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return bad("min_p", p.min_p, "in [0, 1]");
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) {
    return bad("repetition_penalty", p.repetition_penalty, "> 0");
  }
  if (!(p.presence_penalty >= -2.0f && p.presence_penalty <= 2.0f)) {
    return bad("presence_penalty", p.presence_penalty, "in [-2, 2]");
  }
  if (!(p.frequency_penalty >= -2.0f && p.frequency_penalty <= 2.0f)) {
    return bad("frequency_penalty", p.frequency_penalty, "in [-2, 2]");
  }
  if (p.logprobs < -1 || p.logprobs > 20) return bad("logprobs", p.logprobs, "in [0, 20] (or unset)");
  (void)vocab_size;
  return absl::OkStatus();
}

absl::Status ValidateStoppingParams(const StoppingParams& p, int64_t vocab_size) {
  if (p.max_new_tokens < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens is ", p.max_new_tokens, "; it must be >= 1"));
  }
  if (p.min_new_tokens < 0 || p.min_new_tokens > p.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("min_new_tokens is ", p.min_new_tokens,
                                                   "; it must be in [0, max_new_tokens]"));
  }
  for (const std::string& s : p.stop) {
    if (s.empty()) return absl::InvalidArgumentError("stop holds an empty string");
  }
  for (int32_t id : p.stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids holds ", id,
                                                     ", outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace tandem
