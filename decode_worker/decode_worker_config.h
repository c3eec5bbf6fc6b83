// Everything a decode worker process is configured with, in one struct
// filled from flags (decode_worker_main.cc) and validated at start.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/engine/scheduler.h"
#include "common/worker/worker_options.h"

namespace tandem {

struct DecodeWorkerConfig {
  WorkerOptions worker;
  SchedulerOptions scheduler;
  // "decode": takes prompts' KV from prefill workers (and, under
  // conditional disaggregation, short prompts it computes itself);
  // "aggregated": computes every prompt itself and takes no transfers'
  // reservations from the router's placement of disaggregated requests.
  std::string role = "decode";
  // --kv_write_hold_max_seconds: the longest a prefill worker may hold a
  // reservation's blocks for its one-sided writes (DecodeService.
  // HoldKvWrite); past it the hold ends, so a hung prefill worker cannot
  // keep blocks of a released reservation forever.
  double kv_write_hold_max_seconds = 60.0;
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidateDecodeWorkerConfig(const DecodeWorkerConfig& c);

}  // namespace tandem
