// Everything the router process is configured with, in one struct filled
// from flags (router_main.cc) and validated at start.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tandem::router {

// How the router scores workers (router/placement_policy.h).
enum class PlacementMode { kCacheAware, kLoad, kRoundRobin };
// "cache_aware", "load" or "round_robin"; INVALID_ARGUMENT otherwise.
absl::StatusOr<PlacementMode> ParsePlacementMode(std::string_view text);

struct RouterConfig {
  std::string listen = "0.0.0.0:8000";
  std::string model_dir;          // empty: the built-in default model
  std::string served_model_name;  // empty: the directory's name
  // Requests placed on workers at once; the rest wait in the router's
  // queue. 0: twice the sequences the live decode and aggregated workers
  // can batch (their --max_batch_size), so their schedulers always have
  // work queued behind a full batch.
  int32_t max_inflight_requests = 0;
  // Requests waiting for a slot; beyond this, RESOURCE_EXHAUSTED.
  int32_t max_queued_requests = 4096;
  // Under this many prompt tokens a decode worker computes the prompt
  // itself instead of waiting for a prefill worker and a transfer
  // (conditional disaggregation); 0: never. Also used when no prefill
  // worker is live.
  int32_t local_prefill_max_tokens = 0;
  double liveness_timeout_seconds = 5.0;
  double report_interval_seconds = 0.5;
  // The most any worker call may take: each call gets the client's
  // remaining budget, capped by this (and the whole budget when the client
  // set no deadline).
  double worker_timeout_seconds = 600.0;
  // The lease on a KV reservation: a decode worker frees it if Decode has
  // not claimed it by then (the router died between Prefill and Decode).
  // The prefill call must end within it, so it also bounds prefill's
  // queueing, compute and transfer.
  double kv_reservation_ttl_seconds = 120.0;
  // The OpenAI-compatible HTTP API (router/http): host:port (port 0 picks
  // one) and the connections it serves at once.
  std::string http_listen = "0.0.0.0:8080";
  int32_t http_threads = 512;
  // Written once serving: gRPC, metrics and HTTP ports, one per line.
  std::string port_file;
  std::string metrics_listen = "0.0.0.0:0";  // Prometheus /metrics; port 0 picks one
  // Default objectives, when a request carries no SloHints.
  double slo_ttft_seconds = 1.0;
  double slo_tpot_seconds = 0.1;
  // Placement (router/placement_policy.h): the mode, and cache_aware's
  // cost per prompt block a worker lacks and per KV block it has in use.
  PlacementMode placement = PlacementMode::kCacheAware;
  double placement_prefix_weight = 1.0;
  double placement_load_weight = 1.0;
  // A worker whose last block-event batch is older than this many report
  // intervals scores by load only (its index may be out of date).
  int32_t prefix_index_stale_reports = 4;
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidateRouterConfig(const RouterConfig& c);

}  // namespace tandem::router
