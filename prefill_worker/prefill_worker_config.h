// Everything a prefill worker process is configured with, in one struct
// filled from flags (prefill_worker_main.cc) and validated at start.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/worker/worker_options.h"

namespace tandem {

struct PrefillWorkerConfig {
  WorkerOptions worker;
  int64_t max_batch_tokens = 4096;  // prompt tokens per prefill batch
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidatePrefillWorkerConfig(const PrefillWorkerConfig& c);

}  // namespace tandem
