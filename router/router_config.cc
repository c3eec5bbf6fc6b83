#include "router/router_config.h"

#include "absl/strings/str_cat.h"

namespace tandem::router {

absl::StatusOr<PlacementMode> ParsePlacementMode(std::string_view text) {
  if (text == "cache_aware") return PlacementMode::kCacheAware;
  if (text == "load") return PlacementMode::kLoad;
  if (text == "round_robin") return PlacementMode::kRoundRobin;
  return absl::InvalidArgumentError(
      absl::StrCat("--placement '", std::string(text), "' is not one of cache_aware, load, round_robin"));
}

absl::Status ValidateRouterConfig(const RouterConfig& c) {
  if (c.listen.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--listen '", c.listen, "' is not host:port"));
  }
  if (c.http_listen.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--http_listen '", c.http_listen, "' is not host:port"));
  }
  if (c.http_threads < 1) return absl::InvalidArgumentError("--http_threads must be >= 1");
  if (c.max_inflight_requests < 0) {
    return absl::InvalidArgumentError("--max_inflight_requests must be >= 0 (0: from the workers' batch sizes)");
  }
  if (c.max_queued_requests < 0) return absl::InvalidArgumentError("--max_queued_requests must be >= 0");
  if (c.local_prefill_max_tokens < 0) return absl::InvalidArgumentError("--local_prefill_max_tokens must be >= 0");
  if (c.report_interval_seconds <= 0) return absl::InvalidArgumentError("--report_interval_seconds must be positive");
  if (c.liveness_timeout_seconds <= c.report_interval_seconds) {
    return absl::InvalidArgumentError("--liveness_timeout_seconds must exceed --report_interval_seconds");
  }
  if (c.worker_timeout_seconds <= 0) return absl::InvalidArgumentError("--worker_timeout_seconds must be positive");
  if (!(c.kv_reservation_ttl_seconds >= 1.0 && c.kv_reservation_ttl_seconds <= 600.0)) {
    return absl::InvalidArgumentError("--kv_reservation_ttl_seconds must be in [1, 600]");
  }
  if (c.slo_ttft_seconds <= 0 || c.slo_tpot_seconds <= 0) {
    return absl::InvalidArgumentError("--slo_ttft_seconds and --slo_tpot_seconds must be positive");
  }
  if (!(c.placement_prefix_weight >= 0) || !(c.placement_load_weight >= 0)) {
    return absl::InvalidArgumentError("--placement_prefix_weight and --placement_load_weight must be >= 0");
  }
  if (c.prefix_index_stale_reports < 1) return absl::InvalidArgumentError("--prefix_index_stale_reports must be >= 1");
  return absl::OkStatus();
}

}  // namespace tandem::router
