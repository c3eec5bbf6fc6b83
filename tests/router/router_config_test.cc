// RouterConfig validation: every bad setting is refused naming its flag.
#include "router/router_config.h"

#include "gtest/gtest.h"

namespace tandem::router {
namespace {

TEST(RouterConfigTest, DefaultsAreValid) { EXPECT_TRUE(ValidateRouterConfig(RouterConfig()).ok()); }

TEST(RouterConfigTest, BadSettingsNameTheirFlag) {
  struct Case {
    void (*edit)(RouterConfig&);
    const char* flag;
  };
  const Case cases[] = {
      {[](RouterConfig& c) { c.listen = "8000"; }, "--listen"},
      {[](RouterConfig& c) { c.max_inflight_requests = -1; }, "--max_inflight_requests"},
      {[](RouterConfig& c) { c.max_queued_requests = -1; }, "--max_queued_requests"},
      {[](RouterConfig& c) { c.local_prefill_max_tokens = -1; }, "--local_prefill_max_tokens"},
      {[](RouterConfig& c) { c.report_interval_seconds = 0; }, "--report_interval_seconds"},
      {[](RouterConfig& c) { c.liveness_timeout_seconds = 0.25; }, "--liveness_timeout_seconds"},
      {[](RouterConfig& c) { c.worker_timeout_seconds = -1; }, "--worker_timeout_seconds"},
      {[](RouterConfig& c) { c.slo_ttft_seconds = 0; }, "--slo_ttft_seconds"},
      {[](RouterConfig& c) { c.placement_prefix_weight = -1; }, "--placement_prefix_weight"},
      {[](RouterConfig& c) { c.prefix_index_stale_reports = 0; }, "--prefix_index_stale_reports"},
  };
  for (const Case& k : cases) {
    RouterConfig c;
    k.edit(c);
    absl::Status s = ValidateRouterConfig(c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.flag;
    EXPECT_NE(s.message().find(k.flag), std::string::npos) << s;
  }
}

TEST(RouterConfigTest, PlacementModes) {
  EXPECT_EQ(*ParsePlacementMode("cache_aware"), PlacementMode::kCacheAware);
  EXPECT_EQ(*ParsePlacementMode("load"), PlacementMode::kLoad);
  EXPECT_EQ(*ParsePlacementMode("round_robin"), PlacementMode::kRoundRobin);
  absl::StatusOr<PlacementMode> bad = ParsePlacementMode("random");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--placement"), std::string::npos);
}

}  // namespace
}  // namespace tandem::router
