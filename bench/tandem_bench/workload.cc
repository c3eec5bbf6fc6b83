#include "bench/tandem_bench/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/tandem_bench/prefix_workloads.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {

absl::StatusOr<LengthSpec> LengthSpec::Parse(const std::string& text, const std::string& flag) {
  LengthSpec s;
  if (text == "sharegpt") {
    s.kind = Kind::kShareGpt;
    return s;
  }
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  int32_t a = 0, b = 0;
  if (parts.size() == 1 && absl::SimpleAtoi(parts[0], &a) && a > 0) {
    s.lo = s.hi = a;
    return s;
  }
  if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &a) && absl::SimpleAtoi(parts[1], &b) && 0 < a && a <= b) {
    s.kind = Kind::kUniform;
    s.lo = a;
    s.hi = b;
    return s;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "='", text, "': expected N, LO:HI or sharegpt"));
}

absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& text) {
  if (text == "random") return WorkloadKind::kRandom;
  if (text == "multiturn") return WorkloadKind::kMultiTurn;
  if (text == "system_prompt") return WorkloadKind::kSystemPrompt;
  return absl::InvalidArgumentError(
      absl::StrCat("--workload='", text, "': expected random, multiturn or system_prompt"));
}

const char* WorkloadName(WorkloadKind kind) {
  switch (kind) {
    case WorkloadKind::kRandom: return "random";
    case WorkloadKind::kMultiTurn: return "multiturn";
    case WorkloadKind::kSystemPrompt: return "system_prompt";
  }
  return "random";
}

namespace {

// ShareGPT conversations have log-normal-ish lengths: prompts of a few
// hundred tokens with a long tail, answers of ~200 tokens.
int32_t ShareGptLength(std::mt19937_64& g, bool input, int32_t max) {
  std::lognormal_distribution<double> d(input ? 5.2 : 5.3, input ? 1.0 : 0.8);
  return std::clamp(static_cast<int32_t>(std::lround(d(g))), 4, max);
}

}  // namespace

int32_t DrawLength(const LengthSpec& s, std::mt19937_64& g, bool input, int32_t max) {
  switch (s.kind) {
    case LengthSpec::Kind::kFixed: return s.lo;
    case LengthSpec::Kind::kUniform: return std::uniform_int_distribution<int32_t>(s.lo, s.hi)(g);
    case LengthSpec::Kind::kShareGpt: return ShareGptLength(g, input, max);
  }
  return s.lo;
}

std::vector<int32_t> RandomTokens(std::mt19937_64& g, int32_t n, int64_t vocab) {
  // Ids from the lower part of the vocabulary: real tokens, no specials.
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(std::max<int64_t>(1, vocab * 3 / 4) - 1));
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int32_t& t : p) t = id(g);
  return p;
}

absl::StatusOr<std::vector<BenchRequest>> MakeWorkload(const WorkloadOptions& o) {
  if (o.kind == WorkloadKind::kMultiTurn) return MakeMultiTurnWorkload(o);
  if (o.kind == WorkloadKind::kSystemPrompt) return MakeSystemPromptWorkload(o);
  std::mt19937_64 g(o.seed);
  std::vector<BenchRequest> out;
  if (!o.dataset.empty()) {
    std::ifstream in(o.dataset);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot open dataset ", o.dataset));
    std::string line;
    int line_no = 0;
    while (std::getline(in, line) && static_cast<int32_t>(out.size()) < o.num_requests) {
      ++line_no;
      if (line.empty()) continue;
      nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.contains("output_tokens")) {
        return absl::InvalidArgumentError(absl::StrCat(o.dataset, ":", line_no, ": not a JSON object with output_tokens"));
      }
      BenchRequest r;
      r.output_tokens = j["output_tokens"].get<int32_t>();
      if (j.contains("prompt_token_ids")) {
        r.prompt = j["prompt_token_ids"].get<std::vector<int32_t>>();
      } else if (j.contains("prompt_tokens")) {
        r.prompt = RandomTokens(g, j["prompt_tokens"].get<int32_t>(), o.vocab_size);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(o.dataset, ":", line_no, ": needs prompt_tokens or prompt_token_ids"));
      }
      if (r.prompt.empty() || r.output_tokens < 1) {
        return absl::InvalidArgumentError(absl::StrCat(o.dataset, ":", line_no, ": empty prompt or output"));
      }
      out.push_back(std::move(r));
    }
    if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(o.dataset, " holds no request"));
    // Cycle through the dataset when it is shorter than asked.
    for (size_t i = 0; static_cast<int32_t>(out.size()) < o.num_requests; ++i) out.push_back(out[i]);
    return out;
  }
  for (int i = 0; i < o.num_requests; ++i) {
    BenchRequest r;
    r.prompt = RandomTokens(g, DrawLength(o.input, g, true, o.max_input), o.vocab_size);
    r.output_tokens = DrawLength(o.output, g, false, o.max_output);
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<double> PoissonArrivals(int n, double rate, uint64_t seed) {
  std::mt19937_64 g(seed ^ 0x5eedULL);
  std::exponential_distribution<double> gap(rate);
  std::vector<double> t(static_cast<size_t>(n));
  double now = 0;
  for (double& x : t) {
    x = now;
    now += gap(g);
  }
  return t;
}

}  // namespace tandem::bench
