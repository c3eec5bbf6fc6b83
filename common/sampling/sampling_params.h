// Per-request sampling and stopping settings, with vLLM's meaning for each
// field (the public proto maps onto these 1:1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tandem {

struct SamplingParams {
  float temperature = 1.0f;  // 0: greedy (argmax)
  int32_t top_k = 0;         // 0 or -1: disabled
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]: drop tokens with p < min_p * p_max
  std::optional<uint64_t> seed;  // unset: drawn from the engine's generator
  float repetition_penalty = 1.0f;  // > 0; 1 disables (prompt + output tokens)
  float presence_penalty = 0.0f;    // [-2, 2]; output tokens only
  float frequency_penalty = 0.0f;   // [-2, 2]; output tokens only
  int32_t logprobs = -1;            // -1: none; n >= 0: chosen token + top-n

  bool greedy() const { return temperature == 0.0f; }
};

struct StoppingParams {
  int32_t max_new_tokens = 16;
  int32_t min_new_tokens = 0;          // EOS/stop ids are ignored before this
  std::vector<std::string> stop;       // stop strings (not included in output)
  std::vector<int32_t> stop_token_ids; // in addition to the model's EOS ids
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
};

// INVALID_ARGUMENT naming the field when a value is out of range.
absl::Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size);
absl::Status ValidateStoppingParams(const StoppingParams& p, int64_t vocab_size);

}  // namespace tandem
