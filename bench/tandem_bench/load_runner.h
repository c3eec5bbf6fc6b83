// Drives a router with a workload and records, per request, when each
// token arrived: open loop (requests sent at their arrival times, whatever
// the server's speed, as users arrive) or closed loop (a fixed number of
// requests in flight). A multiturn workload runs conversation by
// conversation: a turn leaves at its arrival time (open loop) but never
// before the previous turn's answer is in, since it carries that answer;
// in closed loop each client runs whole conversations.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench/tandem_bench/bench_client.h"
#include "bench/tandem_bench/workload.h"
#include "tandem/v1/generate.grpc.pb.h"

namespace tandem::bench {

struct RequestRecord {
  bool ok = false;
  std::string error;
  double sent = 0;               // seconds since the run started
  std::vector<double> tokens;    // arrival of each token, seconds since `sent`
  int32_t prompt_tokens = 0;
  // What was sent and what came back (token ids).
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> output_ids;  // empty over HTTP (the API returns text)
  double ttft() const { return tokens.empty() ? 0 : tokens.front(); }
  double e2e() const { return tokens.empty() ? 0 : tokens.back(); }
  // (last - first) / (n - 1); 0 with one token.
  double tpot() const { return tokens.size() > 1 ? (tokens.back() - tokens.front()) / (tokens.size() - 1) : 0; }
};

struct LoadOptions {
  double rate = 0;          // requests/s, open loop; 0: closed loop
  int32_t concurrency = 1;  // closed loop
  bool progress = true;     // a progress bar on stderr
  std::string label;        // shown with the progress bar
  double deadline_seconds = 0;  // per request; 0: none
};

struct LoadResult {
  std::vector<RequestRecord> records;
  double duration = 0;  // first send to last completion
};

// One thread per request in flight, all calling `client`.
LoadResult RunLoad(BenchClient& client, const std::vector<BenchRequest>& requests, const LoadOptions& options,
                   uint64_t seed);
// The same over tandem's gRPC API.
LoadResult RunLoad(v1::GenerationService::Stub& stub, const std::vector<BenchRequest>& requests,
                   const LoadOptions& options, uint64_t seed);

std::unique_ptr<v1::GenerationService::Stub> ConnectRouter(const std::string& address);

}  // namespace tandem::bench
