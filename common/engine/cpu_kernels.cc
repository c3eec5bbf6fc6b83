#include "common/engine/cpu_kernels.h"

#include <cmath>
#include <numbers>

namespace tandem {
namespace {

// Eight independent partial sums over k, combined pairwise at the end: the
// compiler vectorizes the lanes, and the order of additions is the same
// for every (row, column).
inline float Dot(const float* a, const float* b, int64_t k) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (int j = 0; i < k; ++i, ++j) acc[j] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

}  // namespace

void MatMulTransposed(ThreadPool& pool, const float* x, int64_t rows, int64_t k, const float* w,
                      int64_t n, const float* bias, float* y, bool round_bf16) {
  // Threads split the weight's rows, so each weight row is read from memory
  // once per call and reused across all activation rows while in cache.
  constexpr int64_t kRowTile = 64;
  pool.ParallelFor(
      n,
      [&](int64_t n_begin, int64_t n_end) {
        for (int64_t r0 = 0; r0 < rows; r0 += kRowTile) {
          const int64_t r1 = std::min(rows, r0 + kRowTile);
          for (int64_t c = n_begin; c < n_end; ++c) {
            const float* wc = w + c * k;
            const float b = bias ? bias[c] : 0.0f;
            if (round_bf16) {
              for (int64_t r = r0; r < r1; ++r) y[r * n + c] = RoundBf16(Dot(x + r * k, wc, k) + b);
            } else {
              for (int64_t r = r0; r < r1; ++r) y[r * n + c] = Dot(x + r * k, wc, k) + b;
            }
          }
        }
      },
      /*min_chunk=*/16);
}

void RmsNorm(const float* x, const float* weight, int64_t rows, int64_t dim, float eps, float* out,
             bool bf16) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    const float mean_sq = Dot(xr, xr, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(mean_sq + eps);
    if (bf16) {
      for (int64_t i = 0; i < dim; ++i) o[i] = RoundBf16(weight[i] * RoundBf16(xr[i] * inv));
    } else {
      for (int64_t i = 0; i < dim; ++i) o[i] = weight[i] * (xr[i] * inv);
    }
  }
}

void SiluMul(const float* gate_up, int64_t rows, int64_t inter, float* out, bool bf16) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = gate_up + r * 2 * inter;
    const float* u = g + inter;
    float* o = out + r * inter;
    if (bf16) {
      for (int64_t i = 0; i < inter; ++i) {
        o[i] = RoundBf16(RoundBf16(g[i] / (1.0f + std::exp(-g[i]))) * u[i]);
      }
    } else {
      for (int64_t i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  }
}

void AddResidual(float* x, const float* delta, int64_t n, bool bf16) {
  if (bf16) {
    for (int64_t i = 0; i < n; ++i) x[i] = RoundBf16(x[i] + delta[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) x[i] += delta[i];
  }
}

void RoundToBf16(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = RoundBf16(x[i]);
}

std::vector<double> RopeInverseFrequencies(const ModelConfig& config) {
  const int64_t half = config.head_dim / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    inv[i] = 1.0 / std::pow(config.rope_theta, static_cast<double>(2 * i) / config.head_dim);
  }
  const RopeScaling& s = config.rope_scaling;
  if (s.type == RopeScaling::Type::kLlama3) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept,
    // and the band between them interpolated smoothly.
    const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
    const double low_freq_wavelen = old_ctx / s.low_freq_factor;
    const double high_freq_wavelen = old_ctx / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_freq_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_freq_wavelen) {
        const double smooth =
            (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
  } else if (s.type == RopeScaling::Type::kLinear) {
    for (double& f : inv) f /= s.factor;
  }
  return inv;
}

void ApplyRope(float* head, int64_t head_dim, int64_t position, std::span<const double> inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const double angle = static_cast<double>(position) * inv_freq[i];
    const float c = static_cast<float>(std::cos(angle));
    const float s = static_cast<float>(std::sin(angle));
    const float a = head[i], b = head[i + half];
    head[i] = a * c - b * s;
    head[i + half] = b * c + a * s;
  }
}

void ApplyRopeBf16(float* head, int64_t head_dim, int64_t position, std::span<const float> inv_freq) {
  const int64_t half = head_dim / 2;
  const float pos = static_cast<float>(position);
  for (int64_t i = 0; i < half; ++i) {
    const float angle = pos * inv_freq[i];
    const float c = RoundBf16(std::cos(angle));
    const float s = RoundBf16(std::sin(angle));
    const float a = head[i], b = head[i + half];
    head[i] = RoundBf16(RoundBf16(a * c) - RoundBf16(b * s));
    head[i + half] = RoundBf16(RoundBf16(b * c) + RoundBf16(a * s));
  }
}

}  // namespace tandem
