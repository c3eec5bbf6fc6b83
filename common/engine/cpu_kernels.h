// The CPU backend's numeric kernels, fp32. Each computes every output
// element with a fixed order of operations that depends only on the
// element's own inputs (never on the batch size, the row's position in the
// batch, or the thread split), which is what makes a request's logits
// independent of what it is batched with.
//
// The `bf16` variants round their outputs to bfloat16 (values kept in
// fp32 buffers) at the points where a bf16 Hugging Face model, and the
// CUDA backend's kernels (cuda/cuda_kernels.cu), round them; arithmetic
// between those points stays fp32.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/dtype.h"
#include "common/model/model_config.h"
#include "common/util/thread_pool.h"

namespace tandem {

// v rounded to the nearest bfloat16 (ties to even), as an fp32 value: the
// one conversion of common/model/dtype.h.
inline float RoundBf16(float v) { return BF16ToFloat(FloatToBF16(v)); }

// y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]): x is [rows, k], w is
// [n, k] as Hugging Face stores Linear weights, y is [rows, n]. With
// `round_bf16` each output is rounded after the bias add (a bf16
// nn.Linear: fp32 accumulation, one rounding of the result).
void MatMulTransposed(ThreadPool& pool, const float* x, int64_t rows, int64_t k, const float* w,
                      int64_t n, const float* bias, float* y, bool round_bf16 = false);

// out = x / sqrt(mean(x^2) + eps) * weight, row by row ([rows, dim]).
// bf16: out = bf16(weight * bf16(x / rms)), Hugging Face's LlamaRMSNorm
// in a bf16 model (the normalized row is cast to bf16 before the weight).
void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out,
             bool bf16 = false);

// out[r][i] = silu(gate_up[r][i]) * gate_up[r][inter + i] for a fused
// [rows, 2*inter] gate/up projection. bf16: bf16(bf16(silu(g)) * u).
void SiluMul(const float* gate_up, int64_t rows, int64_t inter, float* out, bool bf16 = false);

// The residual add x[i] += delta[i]; bf16: x[i] = bf16(x[i] + delta[i]) (a
// bf16 model's residual stream is bf16).
void AddResidual(float* x, const float* delta, int64_t n, bool bf16 = false);

// Rounds n values in place to bf16.
void RoundToBf16(float* x, int64_t n);

// Rotary position embedding tables: the inverse frequency of each of the
// head_dim/2 rotation pairs, with the config's rope scaling applied.
std::vector<double> RopeInverseFrequencies(const ModelConfig& config);

// Rotates one head vector in place for `position` (Hugging Face's
// rotate_half convention: pairs are (i, i + head_dim/2)).
void ApplyRope(float* head, int64_t head_dim, int64_t position, std::span<const double> inv_freq);

// RoPE as a bf16 model (and the CUDA RopeCacheKernel) computes it: the angle
// position * inv_freq in fp32, cos and sin rounded to bf16, every product
// and the sum rounded: h[i] = bf16(bf16(x1 c) - bf16(x2 s)), h[i + half] =
// bf16(bf16(x2 c) + bf16(x1 s)). inv_freq is the fp32 table.
void ApplyRopeBf16(float* head, int64_t head_dim, int64_t position, std::span<const float> inv_freq);

}  // namespace tandem
