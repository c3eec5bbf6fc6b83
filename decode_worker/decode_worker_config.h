// Everything a decode worker process is configured with, in one struct
// filled from flags (decode_worker_main.cc) and validated at start.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/engine/model_loader.h"

namespace tandem {

struct DecodeWorkerConfig {
  std::string listen = "0.0.0.0:0";     // gRPC host:port; port 0 picks one
  std::string advertise_host = "127.0.0.1";  // how the router and peers reach us
  std::string router;                   // router host:port (required)
  ModelSource model;
  BackendOptions backend;
  std::string device = "cpu";  // backend.device, as spelled on the command line
  int32_t max_batch_size = 128;
  int64_t max_batch_tokens = 8192;
  std::string transport = "ucx";
  std::string port_file;                // written with the bound ports, if set
  std::string metrics_listen = "0.0.0.0:0";
  double drain_timeout_seconds = 30.0;  // SIGTERM: time to finish running requests
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidateDecodeWorkerConfig(const DecodeWorkerConfig& c);

}  // namespace tandem
