#include "common/metrics/metrics_server.h"

#include "absl/strings/str_cat.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address,
                                                                    std::map<std::string, std::string> const_labels) {
  std::unique_ptr<MetricsServer> s(new MetricsServer());
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->const_labels_ = std::move(const_labels);
  try {
    s->exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  s->exposer_->RegisterCollectable(s->registry_);
  const std::vector<int> ports = s->exposer_->GetListeningPorts();
  if (ports.empty()) return absl::UnavailableError(absl::StrCat("metrics endpoint on ", address, " has no port"));
  s->port_ = ports.front();
  return s;
}

const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2,
                                        0.3,   0.4,    0.5,   0.75, 1.0,  1.5,  2.0,  3.0,  5.0, 7.5,  10.0,
                                        15.0,  20.0,   30.0,  45.0, 60.0, 120.0, 300.0};
  return b;
}

const std::vector<double>& TokenLatencyBuckets() {
  static const std::vector<double> b = {0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025,
                                        0.03,   0.04,  0.05,  0.075, 0.1,   0.15,  0.2,  0.3,   0.5,  1.0,  2.5};
  return b;
}

}  // namespace tandem
