// The host side of GPU sampling: a batch's SampleSpecs as the rows the
// sampling kernel reads (sampling_kernels.h), and its results back as the
// SampleResults the host Sampler would give. Shared by CudaBackend and the
// kernel's device test (tests/common/engine/cuda_sampling_test.cc), so the
// test checks the conversion the backend runs, not a copy of it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/engine/cuda/sampling_kernels.h"
#include "common/engine/model_backend.h"
#include "common/sampling/sampler.h"

namespace tandem::cuda {

struct SampleRowsInput {
  std::vector<SampleRowParams> params;  // one per spec
  std::vector<PenaltyEntry> penalties;  // rows' [penalty_begin, penalty_end) ranges
  bool any_penalty = false;             // some row needs the kernel's work buffer
};

// Penalty entries: one per distinct in-vocabulary history token (prompt
// tokens only under a repetition penalty), with its count in the output.
SampleRowsInput BuildSampleRows(std::span<const SampleSpec> specs, int64_t vocab);

// `r` as the host Sampler reports it; logprobs only when `p` asked for them.
SampleResult ToSampleResult(const SampleRowResult& r, const SampleRowParams& p);

}  // namespace tandem::cuda
