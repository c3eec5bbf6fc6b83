// Turns one row of logits into the next token, the way vLLM's sampler does,
// reproducibly: the randomness is a pure function of (seed, step).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/sampling/sampling_params.h"

namespace tandem {

// The tokens a sequence has so far, for the penalties.
struct TokenHistory {
  std::span<const int32_t> prompt;
  std::span<const int32_t> output;
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = -1;
  bool logprob_valid = false;  // set when params.logprobs >= 0
  // Log-softmax of the raw logits (before penalties, temperature and
  // truncation: vLLM's default), of the chosen token.
  float logprob = 0.0f;
  int32_t rank = 0;  // 1 = most likely under the raw logits
  // The params.logprobs most likely under the raw logits, descending, ties
  // to the lower id (the same order `rank` counts in).
  std::vector<TokenLogprob> top;
};

// Stateless and thread-safe.
//
// Order of processing: repetition penalty (prompt and output tokens),
// frequency and presence penalties (output tokens), then greedy argmax
// (temperature 0, ties to the lowest id) or temperature, top-k, top-p,
// min-p, and a draw by inverse CDF over the kept tokens in id order.
class Sampler {
 public:
  // `step` is the number of tokens the sequence has generated so far: the
  // draw depends only on (seed, step), never on the batch or call order.
  SampleResult Sample(std::span<const float> logits, const SamplingParams& params,
                      const TokenHistory& history, uint64_t seed, uint64_t step) const;
};

// The uniform in [0, 1) that Sample() uses for (seed, step), exposed for
// tests.
double SamplingUniform(uint64_t seed, uint64_t step);

}  // namespace tandem
