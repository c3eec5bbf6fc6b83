#include "common/worker/worker_status.h"

#include "absl/synchronization/mutex.h"
#include "common/transport/kv_transport.h"

namespace tandem {

v1::WorkerInfo DescribeWorker(const std::string& address, v1::WorkerRole role, const std::string& model_name,
                              const std::string& fingerprint, const std::string& numerics, const KvCacheManager& kv,
                              std::string_view transport) {
  v1::WorkerInfo info;
  info.set_address(address);
  info.set_role(role);
  info.set_model_name(model_name);
  info.set_model_fingerprint(fingerprint);
  info.set_engine_numerics(numerics);
  *info.mutable_kv_layout() = ToProto(kv.layout());
  info.set_kv_blocks_total(kv.num_total_blocks());
  info.add_transports(std::string(transport));
  return info;
}

v1::LoadReport MakeLoadReport(const KvCacheManager& kv, int32_t running, int32_t waiting, bool draining,
                              WorkerMetrics& metrics) {
  v1::LoadReport r;
  const int32_t used = kv.num_used_blocks(), total = kv.num_total_blocks();
  r.set_kv_blocks_free(total - used);
  r.set_kv_blocks_used(used);
  r.set_running_requests(running);
  r.set_waiting_requests(waiting);
  r.set_draining(draining);
  metrics.requests_running->Set(running);
  metrics.requests_waiting->Set(waiting);
  metrics.kv_blocks_capacity->Set(total);
  metrics.kv_blocks_used->Set(used);
  metrics.kv_cache_utilization->Set(total > 0 ? static_cast<double>(used) / total : 0.0);
  metrics.draining->Set(draining ? 1 : 0);
  // The manager keeps running totals; the counters follow them. Only this
  // function moves them, from the registration thread and GetLoad handlers
  // at once: one at a time, so no difference is added twice.
  static absl::Mutex follow_mu(absl::kConstInit);
  absl::MutexLock lock(&follow_mu);
  auto follow = [](prometheus::Counter* c, int64_t total) {
    const double delta = static_cast<double>(total) - c->Value();
    if (delta > 0) c->Increment(delta);
  };
  follow(metrics.prefix_cache_queried_tokens, kv.prefix_queried_tokens());
  follow(metrics.prefix_cache_hit_tokens, kv.prefix_hit_tokens());
  follow(metrics.prefix_cache_evictions, kv.num_evictions());
  metrics.prefix_cache_blocks->Set(kv.num_cached_blocks());
  return r;
}

bool WaitUntilIdle(absl::Duration timeout, absl::Duration poll, const std::function<bool()>& idle) {
  const absl::Time give_up = absl::Now() + timeout;
  while (!idle()) {
    if (absl::Now() >= give_up) return false;
    absl::SleepFor(poll);
  }
  return true;
}

}  // namespace tandem
