// One block of 1024 threads per row. Every selection is done on 64-bit
// keys that order tokens the way the host Sampler does (higher logit
// first, ties to the lower id; NaN as -inf), so "the k best" and "the
// best-first prefix with mass p" are key thresholds found by bisection:
// no sort, no vocabulary-sized scratch.
#include <cfloat>
#include <cmath>

#include "common/engine/cuda/sampling_kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

__device__ inline float Clean(float x) { return isnan(x) ? -INFINITY : x; }

// Larger key = ranks first.
__device__ inline uint64_t Key(float x, int32_t id) {
  x = Clean(x);
  if (x == 0.0f) x = 0.0f;  // -0 and +0 tie, as in the host's comparisons
  const uint32_t b = __float_as_uint(x);
  const uint32_t ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xffffffffu - static_cast<uint32_t>(id));
}
__device__ inline int32_t KeyId(uint64_t key) { return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key)); }

// The host's splitmix64-based SamplingUniform, bit for bit.
__device__ inline uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
__device__ inline double Uniform(uint64_t seed, uint64_t step) {
  return static_cast<double>(Mix(Mix(seed) ^ (step * 0xd1342543de82ef95ull + 1)) >> 11) * 0x1.0p-53;
}

struct Scratch {
  uint64_t u64[kWarps];
  double f64[kWarps];
};

__device__ uint64_t BlockMaxU64(uint64_t v, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) {
    const uint64_t other = __shfl_xor_sync(0xffffffff, v, o);
    v = other > v ? other : v;
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s.u64[threadIdx.x >> 5] = v;
  __syncthreads();
  uint64_t r = 0;
  for (int w = 0; w < kWarps; ++w) r = s.u64[w] > r ? s.u64[w] : r;
  return r;
}

__device__ double BlockSumF64(double v, Scratch& s) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) s.f64[threadIdx.x >> 5] = v;
  __syncthreads();
  double r = 0;
  for (int w = 0; w < kWarps; ++w) r += s.f64[w];
  return r;
}

// Exclusive prefix sum over the threads, in thread order.
__device__ double BlockExclusiveScanF64(double v, Scratch& s) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    const double up = __shfl_up_sync(0xffffffff, inc, o);
    if (lane >= o) inc += up;
  }
  __syncthreads();
  if (lane == 31) s.f64[warp] = inc;
  __syncthreads();
  double before = 0;
  for (int w = 0; w < warp; ++w) before += s.f64[w];
  return before + inc - v;
}

__device__ inline float Weight(float x, float max, float temperature) {
  return x == max ? 1.0f : expf((x - max) / temperature);
}

__global__ void __launch_bounds__(kThreads) SampleKernel(const float* logits, float* work, int64_t vocab,
                                                         const SampleRowParams* params, const PenaltyEntry* pen,
                                                         SampleRowResult* out) {
  __shared__ Scratch s;
  __shared__ int32_t chosen;
  const int64_t row = blockIdx.x;
  const SampleRowParams p = params[row];
  const float* raw = logits + row * vocab;
  const float* src = raw;
  const int32_t V = static_cast<int32_t>(vocab);

  // Penalties on a private copy: repetition on every seen token, then
  // frequency and presence on output tokens (the host's order).
  if (p.penalty_end > p.penalty_begin) {
    float* w = work + row * vocab;
    for (int32_t i = threadIdx.x; i < V; i += kThreads) w[i] = Clean(raw[i]);
    __syncthreads();
    for (int32_t e = p.penalty_begin + threadIdx.x; e < p.penalty_end; e += kThreads) {
      const PenaltyEntry pe = pen[e];
      float l = w[pe.token];
      if (p.repetition_penalty != 1.0f) l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
      l -= p.frequency_penalty * static_cast<float>(pe.output_count) + (pe.output_count > 0 ? p.presence_penalty : 0.0f);
      w[pe.token] = l;
    }
    __syncthreads();
    src = w;
  }

  // The best key: 8 loads per thread in flight, not one (the logits are
  // in L2; a loop of dependent round trips took ~20 us at batch 1).
  uint64_t best = 0;
  int32_t at = threadIdx.x;
  for (; at + 7 * kThreads < V; at += 8 * kThreads) {
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = src[at + j * kThreads];
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const uint64_t k = Key(v[j], at + j * kThreads);
      best = k > best ? k : best;
    }
  }
  for (; at < V; at += kThreads) {
    const uint64_t k = Key(src[at], at);
    best = k > best ? k : best;
  }
  best = BlockMaxU64(best, s);
  int32_t token = KeyId(best);

  if (p.temperature != 0.0f) {
    const float max = Clean(src[token]);
    // top-k: the k-th best key, by bisection on the key space.
    uint64_t cut = 0;
    if (p.top_k > 0 && p.top_k < V) {
      uint64_t lo = 0, hi = best;  // invariant: count(>= lo) >= k, answer in [lo, hi]
      while (lo < hi) {
        const uint64_t mid = lo + (hi - lo + 1) / 2;
        double c = 0;
        for (int32_t i = threadIdx.x; i < V; i += kThreads) c += Key(src[i], i) >= mid ? 1.0 : 0.0;
        if (BlockSumF64(c, s) >= p.top_k) lo = mid; else hi = mid - 1;
      }
      cut = lo;
    }
    double m = 0;
    for (int32_t i = threadIdx.x; i < V; i += kThreads) {
      if (Key(src[i], i) >= cut) m += Weight(Clean(src[i]), max, p.temperature);
    }
    const double total = BlockSumF64(m, s);
    // top-p: the smallest best-first prefix whose mass reaches top_p * total.
    if (p.top_p < 1.0f) {
      const double target = static_cast<double>(p.top_p) * total;
      uint64_t lo = cut, hi = best;  // invariant: mass(>= lo) >= target
      while (lo < hi) {
        const uint64_t mid = lo + (hi - lo + 1) / 2;
        double mm = 0;
        for (int32_t i = threadIdx.x; i < V; i += kThreads) {
          if (Key(src[i], i) >= mid) mm += Weight(Clean(src[i]), max, p.temperature);
        }
        if (BlockSumF64(mm, s) >= target) lo = mid; else hi = mid - 1;
      }
      cut = lo;
    }
    // Inverse CDF in id order over the kept tokens (min-p drops weights
    // under min_p; the best has weight 1). Each thread owns a contiguous
    // run of ids.
    const int32_t chunk = (V + kThreads - 1) / kThreads;
    const int32_t begin = min(V, static_cast<int32_t>(threadIdx.x) * chunk), end = min(V, begin + chunk);
    auto kept_weight = [&](int32_t i) -> float {
      if (Key(src[i], i) < cut) return 0.0f;
      const float w = Weight(Clean(src[i]), max, p.temperature);
      return w < p.min_p ? 0.0f : w;
    };
    double mine = 0;
    int32_t last_kept = -1;
    for (int32_t i = begin; i < end; ++i) {
      const float w = kept_weight(i);
      mine += w;
      if (w > 0) last_kept = i;
    }
    const double before = BlockExclusiveScanF64(mine, s);
    const double kept_total = BlockSumF64(mine, s);
    const double u = Uniform(p.seed, p.step) * kept_total;
    if (threadIdx.x == 0) chosen = -1;
    __syncthreads();
    if (u >= before && u < before + mine) {
      double cdf = before;
      for (int32_t i = begin; i < end; ++i) {
        cdf += kept_weight(i);
        if (u < cdf) {
          chosen = i;
          break;
        }
      }
    }
    // u rounding up to the total: the last kept token with mass.
    const uint64_t last = BlockMaxU64(last_kept >= 0 ? static_cast<uint64_t>(last_kept) + 1 : 0, s);
    token = chosen >= 0 ? chosen : (last > 0 ? static_cast<int32_t>(last - 1) : token);
  }

  SampleRowResult* r = out + row;
  if (p.logprobs < 0) {
    if (threadIdx.x == 0) {
      r->token = token;
      r->num_top = 0;
    }
    return;
  }
  // Logprobs of the raw logits.
  uint64_t raw_best = 0;
  for (int32_t i = threadIdx.x; i < V; i += kThreads) {
    const uint64_t k = Key(raw[i], i);
    raw_best = k > raw_best ? k : raw_best;
  }
  raw_best = BlockMaxU64(raw_best, s);
  const float rmax = Clean(raw[KeyId(raw_best)]);
  double sum = 0;
  const uint64_t chosen_key = Key(raw[token], token);
  double better = 0;
  for (int32_t i = threadIdx.x; i < V; i += kThreads) {
    const float x = Clean(raw[i]);
    sum += x == rmax ? 1.0 : static_cast<double>(expf(x - rmax));
    better += Key(raw[i], i) > chosen_key ? 1.0 : 0.0;
  }
  const double log_sum = log(BlockSumF64(sum, s));
  const double rank = BlockSumF64(better, s);
  auto logprob = [&](int32_t id) {
    const float x = Clean(raw[id]);
    return x == rmax ? static_cast<float>(-log_sum) : static_cast<float>((x - rmax) - log_sum);
  };
  const int n = min(p.logprobs, kMaxTopLogprobs);
  uint64_t prev = raw_best;
  for (int j = 0; j < n; ++j) {
    uint64_t k = 0;
    if (j == 0) {
      k = raw_best;
    } else {
      for (int32_t i = threadIdx.x; i < V; i += kThreads) {
        const uint64_t ki = Key(raw[i], i);
        if (ki < prev && ki > k) k = ki;
      }
      k = BlockMaxU64(k, s);
    }
    prev = k;
    if (threadIdx.x == 0) {
      r->top_ids[j] = KeyId(k);
      r->top_logprobs[j] = logprob(KeyId(k));
    }
  }
  if (threadIdx.x == 0) {
    r->token = token;
    r->logprob = logprob(token);
    r->rank = static_cast<int32_t>(rank) + 1;
    r->num_top = n;
  }
}

}  // namespace

void SampleRows(const float* logits, float* work, int64_t vocab, const SampleRowParams* params,
                const PenaltyEntry* penalties, int64_t rows, SampleRowResult* out, cudaStream_t stream) {
  if (rows > 0) SampleKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, work, vocab, params,
                                                                                    penalties, out);
}

}  // namespace tandem::cuda
