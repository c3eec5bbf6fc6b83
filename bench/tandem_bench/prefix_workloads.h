// The workloads that share prefixes, and the yardstick for prefix caching:
//  - system_prompt: N shared system prompts (1-4k tokens by default),
//    each request one of them plus a random user part;
//  - multiturn: conversations whose turn k sends the whole history (every
//    earlier user message and answer) and a new user message. Answers are
//    the server's, so the runner assembles those prompts (ConversationPrompt).
//  - the oracle hit rate of a finished run: what a placement that always
//    finds the longest computed prefix, in unbounded caches, would hit.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/tandem_bench/load_runner.h"
#include "bench/tandem_bench/workload.h"

namespace tandem::bench {

// The length generators every workload draws from (workload.cc).
int32_t DrawLength(const LengthSpec& s, std::mt19937_64& g, bool input, int32_t max);
std::vector<int32_t> RandomTokens(std::mt19937_64& g, int32_t n, int64_t vocab);

absl::StatusOr<std::vector<BenchRequest>> MakeSystemPromptWorkload(const WorkloadOptions& o);
// Requests in send order: request i is turn i / N of conversation i % N.
// INVALID_ARGUMENT when a conversation would outgrow o.max_context.
absl::StatusOr<std::vector<BenchRequest>> MakeMultiTurnWorkload(const WorkloadOptions& o);

// What a turn sends: `history` (the previous turn's prompt and answer,
// empty on the first turn) and the turn's user message.
std::vector<int32_t> ConversationPrompt(std::span<const int32_t> history, std::span<const int32_t> user_message);

struct PrefixHits {
  int64_t prompt_tokens = 0;
  int64_t hit_tokens = 0;
  double rate() const { return prompt_tokens > 0 ? static_cast<double>(hit_tokens) / prompt_tokens : 0.0; }
};

// Oracle hits of a run's successful requests, as sent: for each request,
// the longest run of leading full blocks (of `block_size` tokens) that
// some request computed before it was sent: the prompt once its first
// token came, and with `answers_cached` also all but the last generated
// token once it finished.
PrefixHits OraclePrefixHits(std::span<const RequestRecord> records, int32_t block_size, bool answers_cached);

}  // namespace tandem::bench
