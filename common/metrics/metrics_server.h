// A process's Prometheus endpoint: one registry whose every metric carries
// the process's constant labels (model, role), served as text on
// GET /metrics by a small HTTP loop of our own. (prometheus-cpp's exposer
// runs civetweb threads with a fixed small stack, which cannot start once
// CUDA's large thread-local storage is loaded into the process.)
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/registry.h"

namespace tandem {

class MetricsServer {
 public:
  // `address` is host:port; port 0 picks a free one (see port()).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address,
                                                               std::map<std::string, std::string> const_labels);
  ~MetricsServer();

  prometheus::Registry& registry() { return *registry_; }
  const std::map<std::string, std::string>& const_labels() const { return const_labels_; }
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  // Accepts connections one at a time and answers each with the current
  // metrics (scrapes are small and infrequent).
  void Serve();

  std::shared_ptr<prometheus::Registry> registry_;
  std::map<std::string, std::string> const_labels_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Latency buckets for LLM serving, from milliseconds (inter-token gaps) to
// minutes (long generations), in seconds.
const std::vector<double>& LatencyBuckets();
// Buckets for per-token times (TPOT, inter-token latency), in seconds.
const std::vector<double>& TokenLatencyBuckets();

}  // namespace tandem
