#include "router/router_config.h"

#include "absl/strings/str_cat.h"

namespace tandem::router {

absl::Status ValidateRouterConfig(const RouterConfig& c) {
  if (c.listen.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--listen '", c.listen, "' is not host:port"));
  }
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
  return absl::OkStatus();
}

}  // namespace tandem::router
