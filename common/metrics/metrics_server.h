// A process's Prometheus endpoint: one registry whose every metric carries
// the process's constant labels (model, role), served on /metrics.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace tandem {

class MetricsServer {
 public:
  // `address` is host:port; port 0 picks a free one (see port()).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                               std::map<std::string, std::string> const_labels);

  prometheus::Registry& registry() { return *registry_; }
  const std::map<std::string, std::string>& const_labels() const { return const_labels_; }
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::map<std::string, std::string> const_labels_;
  int port_ = 0;
};

// Latency buckets for LLM serving, from milliseconds (inter-token gaps) to
// minutes (long generations), in seconds.
const std::vector<double>& LatencyBuckets();
// Buckets for per-token times (TPOT, inter-token latency), in seconds.
const std::vector<double>& TokenLatencyBuckets();

}  // namespace tandem
