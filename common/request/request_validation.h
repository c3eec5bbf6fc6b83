// The rules every generation request passes, in one place: the router
// checks them at the edge, and both workers and `tandem generate` check the
// same ones (a worker's port can be reached without the router). Limits
// are vLLM-like and fixed here, so a request the router accepted is never
// refused by a worker for its size. Every refusal is INVALID_ARGUMENT
// naming the field and the limit, never echoing the oversized value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "common/model/model_config.h"
#include "common/sampling/sampling_params.h"

namespace tandem {

// A client's request id travels in every internal message and log line.
inline constexpr size_t kMaxRequestIdBytes = 256;
// Stop strings are matched against the text after every token.
inline constexpr size_t kMaxStopStrings = 16;
inline constexpr size_t kMaxStopStringBytes = 256;
inline constexpr size_t kMaxStopTokenIds = 64;
// The prompt as text (before tokenization) and as ids; the model's context
// usually binds first, these bound models that declare none.
inline constexpr size_t kMaxPromptBytes = size_t{1} << 20;
inline constexpr size_t kMaxPromptTokens = size_t{1} << 17;
// GenerateRequest.cache_salt, as a client sends it; and the effective salt
// the router derives from it and the caller's API token (cache_salt.h),
// as the workers receive it.
inline constexpr size_t kMaxCacheSaltBytes = 256;
inline constexpr size_t kMaxEffectiveCacheSaltBytes = 512;

// Length and bytes of a request id (empty is allowed: the router assigns one).
absl::Status ValidateRequestId(std::string_view request_id);
// Bytes of a text prompt, before it is tokenized.
absl::Status ValidatePromptText(std::string_view text);
// A tokenized prompt: non-empty, at most kMaxPromptTokens, every id in the
// vocabulary, and room left in the model's context for one more token.
absl::Status ValidatePromptTokens(std::span<const int32_t> prompt, const ModelConfig& model);
// Bytes of a cache salt: at most `limit` (kMaxCacheSaltBytes from a client,
// kMaxEffectiveCacheSaltBytes between processes). Any bytes are allowed;
// the salt is hashed, never logged.
absl::Status ValidateCacheSalt(std::string_view salt, size_t limit = kMaxCacheSaltBytes);
// Sampling and stopping ranges (ValidateSamplingParams,
// ValidateStoppingParams) plus the stop strings' and stop ids' limits.
absl::Status ValidateGenerationParams(const SamplingParams& sampling, const StoppingParams& stopping,
                                      int64_t vocab_size);

}  // namespace tandem
