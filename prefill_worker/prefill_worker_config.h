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
  // --kv_transfer_finish_timeout_seconds: how long a transfer's end waits
  // for the decode worker to confirm the KV writes (a dead decode worker
  // otherwise stalls the prefill loop until the transport notices).
  double kv_transfer_finish_timeout_seconds = 3.0;
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidatePrefillWorkerConfig(const PrefillWorkerConfig& c);

}  // namespace tandem
