#include "common/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/container/flat_hash_map.h"

namespace tandem {
namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

void ApplyPenalties(std::vector<float>& logits, const SamplingParams& p, const TokenHistory& h) {
  const int64_t v = static_cast<int64_t>(logits.size());
  if (p.repetition_penalty != 1.0f) {
    std::vector<bool> seen(logits.size(), false);
    for (auto span : {h.prompt, h.output}) {
      for (int32_t t : span) {
        if (t < 0 || t >= v || seen[t]) continue;
        seen[t] = true;
        logits[t] = logits[t] > 0 ? logits[t] / p.repetition_penalty : logits[t] * p.repetition_penalty;
      }
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    absl::flat_hash_map<int32_t, int32_t> counts;
    for (int32_t t : h.output) {
      if (t >= 0 && t < v) ++counts[t];
    }
    for (auto [t, n] : counts) {
      logits[t] -= p.frequency_penalty * static_cast<float>(n) + p.presence_penalty;
    }
  }
}

int32_t Argmax(const std::vector<float>& x) {
  int32_t best = 0;
  for (int32_t i = 1; i < static_cast<int32_t>(x.size()); ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

void FillLogprobs(std::span<const float> raw, int32_t chosen, int32_t n, SampleResult* r) {
  float max = -INFINITY;
  for (float x : raw) max = std::max(max, x);
  double sum = 0;
  for (float x : raw) sum += std::exp(static_cast<double>(x) - max);
  const float log_z = max + static_cast<float>(std::log(sum));
  r->logprob_valid = true;
  r->logprob = raw[chosen] - log_z;
  int32_t rank = 1;
  for (int32_t i = 0; i < static_cast<int32_t>(raw.size()); ++i) {
    if (raw[i] > raw[chosen] || (raw[i] == raw[chosen] && i < chosen)) ++rank;
  }
  r->rank = rank;
  if (n > 0) {
    std::vector<int32_t> ids(raw.size());
    std::iota(ids.begin(), ids.end(), 0);
    const size_t k = std::min<size_t>(static_cast<size_t>(n), ids.size());
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return raw[a] != raw[b] ? raw[a] > raw[b] : a < b;
    });
    for (size_t i = 0; i < k; ++i) r->top.push_back({ids[i], raw[ids[i]] - log_z});
  }
}

}  // namespace

double SamplingUniform(uint64_t seed, uint64_t step) {
  // 53 random bits of a hash of (seed, step).
  return static_cast<double>(Mix(Mix(seed) ^ (step * 0xd1342543de82ef95ull + 1)) >> 11) * 0x1.0p-53;
}

SampleResult Sampler::Sample(std::span<const float> raw, const SamplingParams& p,
                             const TokenHistory& history, uint64_t seed, uint64_t step) const {
  std::vector<float> logits(raw.begin(), raw.end());
  ApplyPenalties(logits, p, history);
  SampleResult r;
  if (p.greedy()) {
    r.token = Argmax(logits);
  } else {
    // Candidates sorted by logit (descending, ties by id), then truncated.
    std::vector<int32_t> ids(logits.size());
    std::iota(ids.begin(), ids.end(), 0);
    auto by_logit = [&](int32_t a, int32_t b) { return logits[a] != logits[b] ? logits[a] > logits[b] : a < b; };
    size_t keep = ids.size();
    if (p.top_k > 0 && static_cast<size_t>(p.top_k) < keep) {
      keep = static_cast<size_t>(p.top_k);
      std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), by_logit);
      ids.resize(keep);
    } else {
      std::sort(ids.begin(), ids.end(), by_logit);
    }
    // Probabilities at this temperature over the candidates (the max is
    // ids[0], so exp never overflows).
    const double inv_t = 1.0 / p.temperature;
    const double top = logits[ids[0]];
    std::vector<double> prob(ids.size());
    double z = 0;
    for (size_t i = 0; i < ids.size(); ++i) z += prob[i] = std::exp((logits[ids[i]] - top) * inv_t);
    for (double& q : prob) q /= z;
    // top-p: the smallest prefix whose mass reaches top_p.
    if (p.top_p < 1.0f) {
      double mass = 0;
      size_t n = 0;
      while (n < prob.size()) {
        mass += prob[n++];
        if (mass >= p.top_p) break;
      }
      keep = std::max<size_t>(1, n);
      prob.resize(keep);
      ids.resize(keep);
    }
    // min-p: relative to the most likely token's probability.
    if (p.min_p > 0.0f) {
      const double threshold = p.min_p * prob[0];
      size_t n = 1;
      while (n < prob.size() && prob[n] >= threshold) ++n;
      prob.resize(n);
      ids.resize(n);
    }
    double total = 0;
    for (double q : prob) total += q;
    const double u = SamplingUniform(seed, step) * total;
    double cdf = 0;
    // Should rounding leave u past the last step of the CDF, the draw lands
    // on the last kept token with non-zero probability.
    for (size_t i = 0; i < prob.size(); ++i) {
      if (prob[i] > 0) r.token = ids[i];
    }
    for (size_t i = 0; i < prob.size(); ++i) {
      cdf += prob[i];
      if (u < cdf) {
        r.token = ids[i];
        break;
      }
    }
  }
  if (p.logprobs >= 0) FillLogprobs(raw, r.token, p.logprobs, &r);
  return r;
}

}  // namespace tandem
