// What every worker process (prefill and decode) is configured with: where
// it listens and registers, which model and backend it runs, how it ships
// KV and reports metrics, and how long it drains. The flags are defined
// once here; each worker adds its own (batching) flags beside them.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "common/engine/model_loader.h"

namespace tandem {

struct WorkerOptions {
  std::string listen = "0.0.0.0:0";          // gRPC host:port; port 0 picks one
  std::string advertise_host = "127.0.0.1";  // how the router and peers reach us
  std::string router;                        // router host:port (required)
  ModelSource model;
  BackendOptions backend;                    // device set from `device`
  std::string device = "cpu";
  std::string cpu_bf16_activations = "auto";  // parsed into backend; checked by Validate
  std::string transport = "auto";            // KvTransportNames()
  std::string port_file;                     // written with the bound ports, if set
  std::string metrics_listen = "0.0.0.0:0";
  double drain_timeout_seconds = 30.0;       // SIGTERM: time to finish running work
  // Testing the failure paths (fault_injector.h): the fraction of KV
  // transfers and of request-path RPCs failed on purpose, in [0, 1].
  double fault_transfer_failure_rate = 0.0;
  double fault_rpc_failure_rate = 0.0;
};

// From the shared worker flags (--listen, --router, --model, ...).
WorkerOptions WorkerOptionsFromFlags();

// INVALID_ARGUMENT naming the flag.
absl::Status ValidateWorkerOptions(const WorkerOptions& o);

}  // namespace tandem
