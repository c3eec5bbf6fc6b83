// One request's tokens as the engine sees them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/kv/kv_cache_manager.h"
#include "common/sampling/sampling_params.h"

namespace tandem {

// Owned by whoever schedules it (a batching loop); the engine only reads the
// tokens, appends sampled ones and advances num_computed.
// Invariant: 0 <= num_computed <= tokens.size(); the KV of tokens
// [0, num_computed) is in the blocks the KvCacheManager holds for `id`.
struct Sequence {
  SeqId id = 0;
  std::vector<int32_t> tokens;  // prompt followed by generated tokens
  int32_t prompt_len = 0;
  int32_t num_computed = 0;
  SamplingParams sampling;
  // Sampling randomness is a pure function of (seed, index of the generated
  // token), so a sequence samples the same tokens whatever it is batched
  // with, after a preemption, or on another worker.
  uint64_t seed = 0;
  // The effective cache salt (common/request/cache_salt.h): the root of
  // this sequence's block keys, so only sequences of the same salt share
  // cached KV. Empty: the shared, unsalted cache.
  std::string cache_salt;

  int32_t num_generated() const { return static_cast<int32_t>(tokens.size()) - prompt_len; }
  std::span<const int32_t> prompt() const { return {tokens.data(), static_cast<size_t>(prompt_len)}; }
  std::span<const int32_t> output() const {
    return {tokens.data() + prompt_len, tokens.size() - prompt_len};
  }
};

}  // namespace tandem
