#include "common/request/request_validation.h"

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status ValidateRequestId(std::string_view request_id) {
  if (request_id.size() > kMaxRequestIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("request_id is ", request_id.size(), " bytes; at most ",
                                                   kMaxRequestIdBytes, " are allowed"));
  }
  for (unsigned char c : request_id) {
    // Ids end up in log lines: a newline or escape would forge or garble them.
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("request_id holds a control character");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidatePromptText(std::string_view text) {
  if (text.size() > kMaxPromptBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt text is ", text.size(), " bytes; at most ",
                                                   kMaxPromptBytes, " are allowed"));
  }
  return absl::OkStatus();
}

absl::Status ValidateCacheSalt(std::string_view salt, size_t limit) {
  if (salt.size() > limit) {
    return absl::InvalidArgumentError(
        absl::StrCat("cache_salt is ", salt.size(), " bytes; at most ", limit, " are allowed"));
  }
  return absl::OkStatus();
}

absl::Status ValidatePromptTokens(std::span<const int32_t> prompt, const ModelConfig& model) {
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (prompt.size() > kMaxPromptTokens) {
    return absl::InvalidArgumentError(absl::StrCat("the prompt is ", prompt.size(), " tokens; at most ",
                                                   kMaxPromptTokens, " are allowed"));
  }
  for (int32_t id : prompt) {
    if (id < 0 || id >= model.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ", model.vocab_size, ")"));
    }
  }
  if (model.max_position_embeddings > 0 && static_cast<int64_t>(prompt.size()) >= model.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("prompt of ", prompt.size(),
                                                   " tokens leaves no room in the model's context of ",
                                                   model.max_position_embeddings));
  }
  return absl::OkStatus();
}

absl::Status ValidateGenerationParams(const SamplingParams& sampling, const StoppingParams& stopping,
                                      int64_t vocab_size) {
  if (absl::Status s = ValidateSamplingParams(sampling, vocab_size); !s.ok()) return s;
  if (stopping.stop.size() > kMaxStopStrings) {
    return absl::InvalidArgumentError(absl::StrCat("stop holds ", stopping.stop.size(), " strings; at most ",
                                                   kMaxStopStrings, " are allowed"));
  }
  for (size_t i = 0; i < stopping.stop.size(); ++i) {
    if (stopping.stop[i].size() > kMaxStopStringBytes) {
      return absl::InvalidArgumentError(absl::StrCat("stop string ", i, " is ", stopping.stop[i].size(),
                                                     " bytes; at most ", kMaxStopStringBytes, " are allowed"));
    }
  }
  if (stopping.stop_token_ids.size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat("stop_token_ids holds ", stopping.stop_token_ids.size(),
                                                   " ids; at most ", kMaxStopTokenIds, " are allowed"));
  }
  return ValidateStoppingParams(stopping, vocab_size);
}

}  // namespace tandem
