// How a worker describes itself to the router and reports its load: the
// parts prefill and decode workers share. The load report's numbers are
// also the Prometheus gauges' numbers, so both are set in one place.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "absl/time/time.h"
#include "common/kv/kv_cache_manager.h"
#include "common/metrics/serving_metrics.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// Address, role, model, engine numerics, KV layout and pool size,
// transport. The caller adds its role's batch limits.
v1::WorkerInfo DescribeWorker(const std::string& address, v1::WorkerRole role, const std::string& model_name,
                              const std::string& fingerprint, const std::string& numerics, const KvCacheManager& kv,
                              std::string_view transport);

// A load report of the KV pool, the request counts and the drain state,
// with the same values set on `metrics`' gauges.
v1::LoadReport MakeLoadReport(const KvCacheManager& kv, int32_t running, int32_t waiting, bool draining,
                              WorkerMetrics& metrics);

// Polls `idle` every `poll` until it is true (returns true) or `timeout`
// passes (returns false): a draining worker waiting for its work to end.
bool WaitUntilIdle(absl::Duration timeout, absl::Duration poll, const std::function<bool()>& idle);

}  // namespace tandem
