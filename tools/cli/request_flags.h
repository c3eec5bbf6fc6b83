// The flags that describe one generation request (prompt form, sampling,
// stopping, output), shared by `tandem generate` (in-process) and
// `tandem client` (through a router), so both read them identically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "common/model/generation_config.h"
#include "common/sampling/sampling_params.h"

ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(bool, token_ids);
ABSL_DECLARE_FLAG(bool, add_special_tokens);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(bool, skip_special_tokens);
ABSL_DECLARE_FLAG(int32_t, priority);

namespace tandem::cli {

// Comma-separated token ids.
absl::StatusOr<std::vector<int32_t>> ParseIds(const std::string& s);
SamplingParams SamplingFromFlags();
// Which of --temperature, --top_p, --top_k, --repetition_penalty were given:
// the others take the model's generation_config.json defaults (`tandem
// generate` applies them; `tandem client` leaves them unset for the router).
SamplingFieldsSet SamplingFlagsGiven();
absl::StatusOr<StoppingParams> StoppingFromFlags();

}  // namespace tandem::cli
