// What a benchmark sends: a list of requests (prompt and output lengths,
// arrival times), drawn from fixed, uniform or ShareGPT-like length
// distributions or read from a dataset file, and the arrival process
// (open-loop Poisson at a rate, or closed-loop at a fixed concurrency).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::bench {

struct BenchRequest {
  std::vector<int32_t> prompt;  // token ids
  int32_t output_tokens = 0;    // generated exactly (ignore_eos)
};

// A length distribution, parsed from a flag: "128" (fixed), "64:512"
// (uniform, inclusive) or "sharegpt" (the built-in ShareGPT-like mix).
struct LengthSpec {
  enum class Kind { kFixed, kUniform, kShareGpt };
  Kind kind = Kind::kFixed;
  int32_t lo = 128, hi = 128;
  static absl::StatusOr<LengthSpec> Parse(const std::string& text, const std::string& flag);
};

struct WorkloadOptions {
  int32_t num_requests = 100;
  LengthSpec input;
  LengthSpec output;
  int32_t max_input = 2048;   // clamp for the sharegpt generator
  int32_t max_output = 1024;
  int64_t vocab_size = 32000;
  uint64_t seed = 0;
  // A JSON-lines dataset instead of generated lengths (see
  // docs/benchmarks.md): {"prompt_tokens": N, "output_tokens": M} per line,
  // or {"prompt_token_ids": [...], "output_tokens": M}.
  std::string dataset;
};

absl::StatusOr<std::vector<BenchRequest>> MakeWorkload(const WorkloadOptions& o);

// Arrival offsets (seconds from the start) of `n` requests of a Poisson
// process at `rate` requests/s, from a seeded generator.
std::vector<double> PoissonArrivals(int n, double rate, uint64_t seed);

}  // namespace tandem::bench
