// Reads Prometheus counters off tandem processes' /metrics endpoints, so a
// run can report what the servers counted (prefix-cache hits) beside what
// the client measured.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::bench {

// The body of GET http://<host:port>/metrics (HTTP/1.0, plain TCP).
absl::StatusOr<std::string> FetchMetrics(const std::string& address);

// Sum of every sample of counter or gauge `name` (any labels) in a
// Prometheus text exposition.
double SumSamples(const std::string& exposition, const std::string& name);

// The prefix-cache counters summed over endpoints: the workers' queried
// and hit prompt tokens, and the router's routed and predicted-hit tokens.
struct PrefixCounters {
  double queried_tokens = 0;
  double hit_tokens = 0;
  double routed_tokens = 0;
  double routed_hit_tokens = 0;
};
absl::StatusOr<PrefixCounters> ScrapePrefixCounters(const std::vector<std::string>& endpoints);

}  // namespace tandem::bench
