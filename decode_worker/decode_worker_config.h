// Everything a decode worker process is configured with, in one struct
// filled from flags (decode_worker_main.cc) and validated at start.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/worker/worker_options.h"

namespace tandem {

struct DecodeWorkerConfig {
  WorkerOptions worker;
  int32_t max_batch_size = 128;
  int64_t max_batch_tokens = 8192;
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidateDecodeWorkerConfig(const DecodeWorkerConfig& c);

}  // namespace tandem
