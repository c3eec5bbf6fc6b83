#include "router/placement_metrics.h"

#include "prometheus/family.h"

namespace tandem::router {
namespace {

prometheus::Counter* Counter(MetricsServer& s, const char* name, const char* help) {
  return &prometheus::BuildCounter().Name(name).Help(help).Labels(s.const_labels()).Register(s.registry()).Add({});
}

prometheus::Gauge* Gauge(MetricsServer& s, const char* name, const char* help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Labels(s.const_labels()).Register(s.registry()).Add({});
}

}  // namespace

PlacementMetrics::PlacementMetrics(MetricsServer& s)
    : routed_prompt_tokens(Counter(s, "tandem_router_routed_prompt_tokens_total",
                                   "Prompt tokens of requests the router placed.")),
      routed_hit_tokens(Counter(s, "tandem_router_routed_prefix_hit_tokens_total",
                                "Prompt tokens the chosen worker was predicted to have cached (prefix index).")),
      routed_hit_ratio(Gauge(s, "tandem_router_routed_prefix_hit_ratio",
                             "Predicted cached prompt tokens over routed prompt tokens since start.")) {
  auto& ttft = prometheus::BuildHistogram()
                   .Name("tandem_router_ttft_by_prefix_seconds")
                   .Help("Time to first token of successful requests, by whether placement found a cached prefix "
                         "on the computing worker (prefix_cache=hit) or not (miss).")
                   .Labels(s.const_labels())
                   .Register(s.registry());
  ttft_hit = &ttft.Add({{"prefix_cache", "hit"}}, LatencyBuckets());
  ttft_miss = &ttft.Add({{"prefix_cache", "miss"}}, LatencyBuckets());
  index_blocks = Gauge(s, "tandem_router_prefix_index_blocks", "Distinct block keys in the router's prefix index.");
}

void PlacementMetrics::RecordRouted(int64_t prompt_tokens, int64_t predicted_hit_tokens) {
  routed_prompt_tokens->Increment(static_cast<double>(prompt_tokens));
  routed_hit_tokens->Increment(static_cast<double>(predicted_hit_tokens));
  const double total = routed_prompt_tokens->Value();
  routed_hit_ratio->Set(total > 0 ? routed_hit_tokens->Value() / total : 0.0);
}

void PlacementMetrics::RecordTtft(double seconds, bool prefix_hit) {
  (prefix_hit ? ttft_hit : ttft_miss)->Observe(seconds);
}

}  // namespace tandem::router
