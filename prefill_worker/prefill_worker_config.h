// Everything a prefill worker process is configured with, in one struct
// filled from flags (prefill_worker_main.cc) and validated at start.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/engine/model_loader.h"

namespace tandem {

struct PrefillWorkerConfig {
  std::string listen = "0.0.0.0:0";
  std::string advertise_host = "127.0.0.1";
  std::string router;
  ModelSource model;
  BackendOptions backend;
  std::string device = "cpu";  // backend.device, as spelled on the command line  // its KV pool is scratch for prompts in flight
  int64_t max_batch_tokens = 4096;
  std::string transport = "ucx";
  std::string port_file;
  std::string metrics_listen = "0.0.0.0:0";
  double drain_timeout_seconds = 30.0;
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidatePrefillWorkerConfig(const PrefillWorkerConfig& c);

}  // namespace tandem
