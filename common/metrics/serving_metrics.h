// The metrics each tandem process exports, named by Prometheus conventions
// (tandem_ prefix, base units, _seconds/_bytes/_total) and labelled with
// model and role by the MetricsServer. One struct per role; the pointers
// are owned by the registry and live as long as the MetricsServer.
#pragma once

#include <string>

#include "common/metrics/metrics_server.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"

namespace tandem {

// The KV pool and queue gauges every worker has.
struct WorkerMetrics {
  explicit WorkerMetrics(MetricsServer& server);
  prometheus::Gauge* requests_running;
  prometheus::Gauge* requests_waiting;
  prometheus::Gauge* kv_blocks_capacity;
  prometheus::Gauge* kv_blocks_used;
  prometheus::Gauge* kv_cache_utilization;
  prometheus::Gauge* draining;
  // The prefix cache (common/kv/): tokens of admitted sequences looked up,
  // and of those found cached; blocks cached now (held or evictable);
  // cached blocks reused for other content.
  prometheus::Counter* prefix_cache_queried_tokens;
  prometheus::Counter* prefix_cache_hit_tokens;
  prometheus::Gauge* prefix_cache_blocks;
  prometheus::Counter* prefix_cache_evictions;
};

struct DecodeMetrics : WorkerMetrics {
  explicit DecodeMetrics(MetricsServer& server);
  prometheus::Gauge* batch_size;
  prometheus::Histogram* batch_size_per_iteration;
  prometheus::Counter* iterations;
  prometheus::Counter* generated_tokens;
  prometheus::Counter* preemptions;
  prometheus::Gauge* kv_reservations;
};

struct PrefillMetrics : WorkerMetrics {
  PrefillMetrics(MetricsServer& server, const std::string& transport);
  prometheus::Gauge* queued_prompt_tokens;
  prometheus::Counter* prompt_tokens;
  prometheus::Histogram* prefill_time;
  prometheus::Histogram* kv_transfer_time;
  prometheus::Counter* kv_transfer_bytes;
  prometheus::Gauge* kv_transfer_bandwidth;
  prometheus::Counter* kv_transfers_failed;
};

struct RouterMetrics {
  explicit RouterMetrics(MetricsServer& server);
  // outcome: a gRPC status name in lower case ("ok", "cancelled", ...);
  // finish_reason: length, stop or none.
  prometheus::Counter& Requests(const std::string& outcome, const std::string& finish_reason);
  // slo: ttft, tpot or all; attained: true or false.
  prometheus::Counter& Slo(const std::string& slo, bool attained);

  prometheus::Histogram* ttft;
  prometheus::Histogram* tpot;
  prometheus::Histogram* inter_token_latency;
  prometheus::Histogram* e2e_latency;
  prometheus::Histogram* queue_time;
  prometheus::Histogram* prefill_time;
  prometheus::Histogram* kv_transfer_time;
  prometheus::Counter* prompt_tokens;
  prometheus::Counter* generation_tokens;
  prometheus::Gauge* requests_running;
  prometheus::Gauge* requests_waiting;  // in the admission queue
  prometheus::Gauge* ttft_target;
  prometheus::Gauge* tpot_target;

 private:
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Counter>* slo_;
};

}  // namespace tandem
