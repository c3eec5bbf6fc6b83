// The router's metrics of cache-aware placement: how much of the routed
// prompts the chosen workers were predicted to hold, TTFT split by whether
// the request was placed on a cached prefix, and the prefix index's size.
// Registered on the router's MetricsServer; pointers live as long as it.
#pragma once

#include <cstdint>

#include "common/metrics/metrics_server.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace tandem::router {

struct PlacementMetrics {
  explicit PlacementMetrics(MetricsServer& server);

  // One placed request: its prompt length and the tokens the worker that
  // computes it (prefill worker, or the worker prefilling locally) was
  // predicted to have cached. Thread-safe.
  void RecordRouted(int64_t prompt_tokens, int64_t predicted_hit_tokens);
  // A successful request's TTFT, by whether it was placed on a cached prefix.
  void RecordTtft(double seconds, bool prefix_hit);

  prometheus::Counter* routed_prompt_tokens;
  prometheus::Counter* routed_hit_tokens;
  // routed_hit_tokens / routed_prompt_tokens since start (dashboards use
  // the rate of the two counters).
  prometheus::Gauge* routed_hit_ratio;
  prometheus::Histogram* ttft_hit;
  prometheus::Histogram* ttft_miss;
  prometheus::Gauge* index_blocks;
};

}  // namespace tandem::router
