// Everything a prefill worker process is configured with, in one struct
// filled from flags (prefill_worker_main.cc) and validated at start.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/engine/scheduler.h"
#include "common/worker/worker_options.h"

namespace tandem {

struct PrefillWorkerConfig {
  WorkerOptions worker;
  SchedulerOptions scheduler;  // the step's token budget and prompt chunks
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidatePrefillWorkerConfig(const PrefillWorkerConfig& c);

}  // namespace tandem
