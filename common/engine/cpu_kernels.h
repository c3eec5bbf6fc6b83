// The CPU backend's numeric kernels, fp32. Each computes every output
// element with a fixed order of operations that depends only on the
// element's own inputs (never on the batch size, the row's position in the
// batch, or the thread split), which is what makes a request's logits
// independent of what it is batched with.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/model_config.h"
#include "common/util/thread_pool.h"

namespace tandem {

// y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]): x is [rows, k], w is
// [n, k] as Hugging Face stores Linear weights, y is [rows, n].
void MatMulTransposed(ThreadPool& pool, const float* x, int64_t rows, int64_t k, const float* w,
                      int64_t n, const float* bias, float* y);

// out = x / sqrt(mean(x^2) + eps) * weight, row by row ([rows, dim]).
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out);

// out[r][i] = silu(gate_up[r][i]) * gate_up[r][inter + i] for a fused
// [rows, 2*inter] gate/up projection.
void SiluMul(const float* gate_up, int64_t rows, int64_t inter, float* out);

// Rotary position embedding tables: the inverse frequency of each of the
// head_dim/2 rotation pairs, with the config's rope scaling applied.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

// Rotates one head vector in place for `position` (Hugging Face's
// rotate_half convention: pairs are (i, i + head_dim/2)).
void ApplyRope(float* head, int64_t head_dim, int64_t position, std::span<const double> inv_freq);

}  // namespace tandem
