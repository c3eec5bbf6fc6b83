#include "bench/tandem_bench/run_stats.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace tandem::bench {

Percentiles Summarize(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    const double pos = q * (v.size() - 1);
    const size_t lo = static_cast<size_t>(pos);
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  };
  p.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  p.p50 = at(0.5);
  p.p90 = at(0.9);
  p.p99 = at(0.99);
  return p;
}

RunStats ComputeStats(const LoadResult& result, const SloTargets& slo) {
  RunStats s;
  s.duration = result.duration;
  std::vector<double> itl;
  int ttft_ok = 0, tpot_ok = 0, both_ok = 0;
  for (const RequestRecord& r : result.records) {
    if (!r.ok || r.tokens.empty()) {
      ++s.failed;
      continue;
    }
    ++s.completed;
    s.input_tokens += r.prompt_tokens;
    s.output_tokens += static_cast<int64_t>(r.tokens.size());
    s.ttft_samples.push_back(r.ttft());
    s.e2e_samples.push_back(r.e2e());
    if (r.tokens.size() > 1) s.tpot_samples.push_back(r.tpot());
    for (size_t i = 1; i < r.tokens.size(); ++i) itl.push_back(r.tokens[i] - r.tokens[i - 1]);
    const bool a = r.ttft() <= slo.ttft_seconds, b = r.tpot() <= slo.tpot_seconds;
    ttft_ok += a;
    tpot_ok += b;
    both_ok += a && b;
  }
  const double n = static_cast<double>(result.records.size());
  if (s.duration > 0) {
    s.request_throughput = s.completed / s.duration;
    s.input_tokens_per_s = s.input_tokens / s.duration;
    s.output_tokens_per_s = s.output_tokens / s.duration;
    s.goodput = both_ok / s.duration;
  }
  if (n > 0) {
    s.attainment_ttft = ttft_ok / n;
    s.attainment_tpot = tpot_ok / n;
    s.attainment = both_ok / n;
  }
  s.ttft = Summarize(s.ttft_samples);
  s.tpot = Summarize(s.tpot_samples);
  s.itl = Summarize(itl);
  s.e2e = Summarize(s.e2e_samples);
  return s;
}

namespace {

nlohmann::json P(const Percentiles& p) { return {{"mean", p.mean}, {"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}}; }
Percentiles P(const nlohmann::json& j) { return {j["mean"], j["p50"], j["p90"], j["p99"]}; }

}  // namespace

nlohmann::json ToJson(const RunStats& s) {
  nlohmann::json j = {{"rate", s.rate},
          {"concurrency", s.concurrency},
          {"completed", s.completed},
          {"failed", s.failed},
          {"duration_s", s.duration},
          {"request_throughput", s.request_throughput},
          {"input_tokens", s.input_tokens},
          {"output_tokens", s.output_tokens},
          {"input_tokens_per_s", s.input_tokens_per_s},
          {"output_tokens_per_s", s.output_tokens_per_s},
          {"ttft_s", P(s.ttft)},
          {"tpot_s", P(s.tpot)},
          {"itl_s", P(s.itl)},
          {"e2e_s", P(s.e2e)},
          {"attainment", {{"ttft", s.attainment_ttft}, {"tpot", s.attainment_tpot}, {"all", s.attainment}}},
          {"goodput_req_s", s.goodput},
          {"samples", {{"ttft_s", s.ttft_samples}, {"tpot_s", s.tpot_samples}, {"e2e_s", s.e2e_samples}}}};
  // The same numbers under vLLM's benchmark names (benchmark_serving.py /
  // `vllm bench serve`), so tools that read those files read these.
  j["duration"] = s.duration;
  j["total_input_tokens"] = s.input_tokens;
  j["total_output_tokens"] = s.output_tokens;
  j["output_throughput"] = s.output_tokens_per_s;
  j["total_token_throughput"] = s.input_tokens_per_s + s.output_tokens_per_s;
  for (const auto& [name, p] : {std::pair<const char*, const Percentiles*>{"ttft", &s.ttft},
                                {"tpot", &s.tpot}, {"itl", &s.itl}, {"e2el", &s.e2e}}) {
    j[absl::StrCat("mean_", name, "_ms")] = 1e3 * p->mean;
    j[absl::StrCat("median_", name, "_ms")] = 1e3 * p->p50;
    j[absl::StrCat("p90_", name, "_ms")] = 1e3 * p->p90;
    j[absl::StrCat("p99_", name, "_ms")] = 1e3 * p->p99;
  }
  return j;
}

RunStats RunStatsFromJson(const nlohmann::json& j) {
  RunStats s;
  s.rate = j["rate"];
  s.concurrency = j["concurrency"];
  s.completed = j["completed"];
  s.failed = j["failed"];
  s.duration = j["duration_s"];
  s.request_throughput = j["request_throughput"];
  s.input_tokens = j["input_tokens"];
  s.output_tokens = j["output_tokens"];
  s.input_tokens_per_s = j["input_tokens_per_s"];
  s.output_tokens_per_s = j["output_tokens_per_s"];
  s.ttft = P(j["ttft_s"]);
  s.tpot = P(j["tpot_s"]);
  s.itl = P(j["itl_s"]);
  s.e2e = P(j["e2e_s"]);
  s.attainment_ttft = j["attainment"]["ttft"];
  s.attainment_tpot = j["attainment"]["tpot"];
  s.attainment = j["attainment"]["all"];
  s.goodput = j["goodput_req_s"];
  s.ttft_samples = j["samples"]["ttft_s"].get<std::vector<double>>();
  s.tpot_samples = j["samples"]["tpot_s"].get<std::vector<double>>();
  s.e2e_samples = j["samples"]["e2e_s"].get<std::vector<double>>();
  return s;
}

double GoodputRate(const std::vector<RunStats>& runs, double target) {
  double best = 0;
  for (const RunStats& r : runs) {
    if (r.rate > 0 && r.attainment >= target) best = std::max(best, r.rate);
  }
  return best;
}

double ServedGoodput(const std::vector<RunStats>& runs, double target) {
  double best_rate = 0, served = 0;
  for (const RunStats& r : runs) {
    if (r.rate > 0 && r.attainment >= target && r.rate > best_rate) {
      best_rate = r.rate;
      served = r.goodput;
    }
  }
  return served;
}

}  // namespace tandem::bench
