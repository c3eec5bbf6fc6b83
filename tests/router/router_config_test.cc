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
  };
  for (const Case& k : cases) {
    RouterConfig c;
    k.edit(c);
    absl::Status s = ValidateRouterConfig(c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << k.flag;
    EXPECT_NE(s.message().find(k.flag), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace tandem::router
