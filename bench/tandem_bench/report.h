// Presenting a sweep: a table on the terminal, a JSON file, and plots.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bench/tandem_bench/run_stats.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {

// One line per run: load, throughput, latency percentiles, attainment.
std::string FormatTable(const std::vector<RunStats>& runs, const SloTargets& slo);

// attainment_vs_rate.svg, latency_vs_rate.svg, ttft_cdf.svg, tpot_cdf.svg
// (the first two for open-loop sweeps only) into `dir`.
absl::Status WritePlots(const std::vector<RunStats>& runs, const SloTargets& slo, const std::string& dir);

// Two result files side by side: p90 TTFT, p90 TPOT and output tokens/s
// against the offered rate (or concurrency).
absl::Status WriteComparePlot(const nlohmann::json& a, const std::string& a_name, const nlohmann::json& b,
                              const std::string& b_name, const std::string& out_svg);

}  // namespace tandem::bench
