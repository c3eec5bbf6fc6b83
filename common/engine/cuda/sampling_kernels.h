// Sampling on the GPU: one thread block turns one row of logits into the
// next token, with the semantics of the host Sampler (common/sampling):
// penalties, then greedy argmax (ties to the lowest id) or temperature,
// top-k, top-p, min-p and an inverse-CDF draw over the kept tokens in id
// order, with the uniform of SamplingUniform(seed, step); logprobs of the
// raw logits with the chosen token's rank and the top n. Only the results
// (a few bytes a row) go back to the host, never the logits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

inline constexpr int kMaxTopLogprobs = 20;

struct SampleRowParams {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;
  int32_t logprobs = -1;     // -1: none; n: chosen + top n (n <= 20)
  // Penalties: the row's entries are penalties[penalty_begin, penalty_end).
  int32_t penalty_begin = 0;
  int32_t penalty_end = 0;
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
};

// A token in the sequence's history: seen at all (prompt or output), and
// how often in the output. One entry per distinct token.
struct PenaltyEntry {
  int32_t token;
  int32_t output_count;
};

struct SampleRowResult {
  int32_t token;
  float logprob;
  int32_t rank;
  int32_t num_top;
  int32_t top_ids[kMaxTopLogprobs];
  float top_logprobs[kMaxTopLogprobs];
};

// logits: [rows][vocab] raw fp32 rows (read only). work: [rows][vocab]
// scratch for the rows that have penalties (may be null when none has).
void SampleRows(const float* logits, float* work, int64_t vocab, const SampleRowParams* params,
                const PenaltyEntry* penalties, int64_t rows, SampleRowResult* out, cudaStream_t stream);

}  // namespace tandem::cuda
