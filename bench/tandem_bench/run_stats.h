// What one benchmark run measured, summarized the way serving benchmarks
// report it (vLLM's benchmark_serving, DistServe): throughput, latency
// percentiles, SLO attainment and goodput, and the samples for CDFs.
#pragma once

#include <vector>

#include "bench/tandem_bench/load_runner.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};
// Linear interpolation between order statistics (numpy's default).
Percentiles Summarize(std::vector<double> samples);

struct SloTargets {
  double ttft_seconds = 1.0;
  double tpot_seconds = 0.1;
};

struct RunStats {
  double rate = 0;         // offered load (open loop); 0 for closed loop
  int32_t concurrency = 0; // closed loop
  int32_t completed = 0, failed = 0;
  double duration = 0;
  double request_throughput = 0, input_tokens_per_s = 0, output_tokens_per_s = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  Percentiles ttft, tpot, itl, e2e;
  // Share of all requests (failed ones count as missing) meeting each target.
  double attainment_ttft = 0, attainment_tpot = 0, attainment = 0;
  double goodput = 0;  // requests/s meeting both targets
  std::vector<double> ttft_samples, tpot_samples, e2e_samples;
};

RunStats ComputeStats(const LoadResult& result, const SloTargets& slo);

nlohmann::json ToJson(const RunStats& s);
RunStats RunStatsFromJson(const nlohmann::json& j);

// The highest offered rate whose attainment is at least `target`; 0 if
// none is. Rates must come from one sweep.
double GoodputRate(const std::vector<RunStats>& runs, double target);
// The requests/s served that met both objectives (RunStats::goodput) at
// that same highest rate; 0 if no rate reaches `target`.
double ServedGoodput(const std::vector<RunStats>& runs, double target);

}  // namespace tandem::bench
