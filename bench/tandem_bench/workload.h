// What a benchmark sends: a list of requests (prompt and output lengths,
// arrival times), drawn from fixed, uniform or ShareGPT-like length
// distributions or read from a dataset file, and the arrival process
// (open-loop Poisson at a rate, or closed-loop at a fixed concurrency).
// Three workloads: random prompts (no sharing), system_prompt (a few long
// shared prefixes, each request adds a random user part) and multiturn
// (conversations whose every turn resends the history with the previous
// answer; the answer is known only at run time, so the load runner builds
// those prompts, prefix_workloads.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::bench {

struct BenchRequest {
  // Token ids; for a turn of a conversation, only the new user message
  // (the runner puts the history in front).
  std::vector<int32_t> prompt;
  int32_t output_tokens = 0;    // generated exactly (ignore_eos)
  // Multiturn: which conversation (-1: none) and which turn of it.
  int32_t conversation = -1;
  int32_t turn = 0;
};

enum class WorkloadKind { kRandom, kMultiTurn, kSystemPrompt };
// "random", "multiturn" or "system_prompt"; INVALID_ARGUMENT otherwise.
absl::StatusOr<WorkloadKind> ParseWorkloadKind(const std::string& text);
const char* WorkloadName(WorkloadKind kind);

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
  WorkloadKind kind = WorkloadKind::kRandom;
  // multiturn: conversations, interleaved (request i is turn i / N of
  // conversation i % N); `input` draws each user message, `output` each
  // answer. Every conversation must fit `max_context`.
  int32_t conversations = 8;
  int32_t max_context = 4096;
  // system_prompt: shared prefixes of `system_prompt_len` tokens; request
  // i uses prefix i % N and adds a random user part drawn from `input`.
  int32_t system_prompts = 4;
  LengthSpec system_prompt_len{LengthSpec::Kind::kUniform, 1024, 4096};
};

absl::StatusOr<std::vector<BenchRequest>> MakeWorkload(const WorkloadOptions& o);

// Arrival offsets (seconds from the start) of `n` requests of a Poisson
// process at `rate` requests/s, from a seeded generator.
std::vector<double> PoissonArrivals(int n, double rate, uint64_t seed);

}  // namespace tandem::bench
