// Failures on purpose, for testing the failure paths under load: a worker
// started with --fault_rpc_failure_rate or --fault_transfer_failure_rate
// fails that fraction of its request-path RPCs (ReserveKv, Prefill,
// Decode) or KV transfers, at random, with UNAVAILABLE naming the fault.
// The failures take the normal paths (the router releases, the transfer
// aborts alone), so a test can check that each one ends cleanly. Rates are
// 0 by default; GetLoad and health checks are never failed, so liveness
// stays truthful.
#pragma once

#include <mutex>
#include <random>
#include <string_view>

#include "absl/status/status.h"

namespace tandem {

class FaultInjector {
 public:
  // `rate` in [0, 1] (ValidateWorkerOptions checks the flags).
  explicit FaultInjector(double rate, uint64_t seed = std::random_device{}()) : rate_(rate), gen_(seed) {}

  // Thread-safe. OK, or (with probability rate) UNAVAILABLE "injected
  // fault: <what>".
  absl::Status MaybeFail(std::string_view what);
  double rate() const { return rate_; }

 private:
  const double rate_;
  std::mutex mu_;
  std::mt19937_64 gen_;
};

}  // namespace tandem
