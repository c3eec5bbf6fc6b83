#include "common/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>

namespace tandem {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// splitmix64's finalizer: a bijective 64-bit mix with full avalanche.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A NaN logit would break the strict weak ordering the sorts rely on; it is
// read as impossible (-inf) everywhere instead.
float Clean(float x) { return std::isnan(x) ? kNegInf : x; }

// The in-vocabulary ids of `spans`, sorted (with repeats): the penalties
// work from this instead of a vocabulary-sized table, so their cost follows
// the history length, not the vocabulary.
std::vector<int32_t> SortedIds(std::initializer_list<std::span<const int32_t>> spans, int64_t vocab) {
  std::vector<int32_t> ids;
  size_t n = 0;
  for (auto s : spans) n += s.size();
  ids.reserve(n);
  for (auto s : spans) {
    for (int32_t t : s) {
      if (t >= 0 && t < vocab) ids.push_back(t);
    }
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

bool HasPenalties(const SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

void ApplyPenalties(std::vector<float>& logits, const SamplingParams& p, const TokenHistory& h) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (p.repetition_penalty != 1.0f) {
    std::vector<int32_t> seen = SortedIds({h.prompt, h.output}, vocab);
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t t : seen) {
      float& l = logits[t];
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    const std::vector<int32_t> out = SortedIds({h.output}, vocab);
    for (size_t i = 0; i < out.size();) {
      size_t j = i;
      while (j < out.size() && out[j] == out[i]) ++j;
      logits[out[i]] -= p.frequency_penalty * static_cast<float>(j - i) + p.presence_penalty;
      i = j;
    }
  }
}

// "a ranks before b": higher logit first, ties to the lower id.
bool Before(float la, int32_t a, float lb, int32_t b) { return la != lb ? la > lb : a < b; }

// Ties go to the lowest id; NaN never wins (every comparison with it fails).
int32_t Argmax(std::span<const float> x) {
  int32_t best = 0;
  float best_value = Clean(x[0]);
  for (int32_t i = 1; i < static_cast<int32_t>(x.size()); ++i) {
    if (x[i] > best_value) {
      best = i;
      best_value = x[i];
    }
  }
  return best;
}

// A token still in the running, with its unnormalized probability at the
// request's temperature (the most likely candidate has weight 1).
struct Candidate {
  float weight;
  float logit;
  int32_t id;
};

bool CandidateBefore(const Candidate& a, const Candidate& b) { return Before(a.logit, a.id, b.logit, b.id); }

// top-k: the k best, sorted. Otherwise every token, in id order.
std::vector<Candidate> TopKCandidates(std::span<const float> logits, int32_t top_k, bool* sorted) {
  std::vector<Candidate> c(logits.size());
  for (size_t i = 0; i < c.size(); ++i) c[i] = {0.0f, Clean(logits[i]), static_cast<int32_t>(i)};
  *sorted = false;
  if (top_k > 0 && static_cast<size_t>(top_k) < c.size()) {
    std::nth_element(c.begin(), c.begin() + top_k, c.end(), CandidateBefore);
    c.resize(static_cast<size_t>(top_k));
    std::sort(c.begin(), c.end(), CandidateBefore);
    *sorted = true;
  }
  return c;
}

// Fills the weights exp((logit - max) / t) and returns their sum. Written
// so that no input makes a NaN: the max itself gets exactly 1 (also when it
// is +-inf), and a tiny t sends the others to 0 rather than to inf * 0.
// Single precision (a weight under 1e-38 of the best is 0), summed in double.
double FillWeights(std::vector<Candidate>& c, float temperature) {
  float max = kNegInf;
  for (const Candidate& x : c) max = std::max(max, x.logit);
  double total = 0;
  for (Candidate& x : c) {
    x.weight = x.logit == max ? 1.0f : std::exp((x.logit - max) / temperature);
    total += x.weight;
  }
  return total;
}

// top-p: keeps the smallest best-first prefix whose mass reaches
// top_p * total (at least one token). Unsorted candidates are not sorted: a
// bisection by nth_element finds the cut in expected linear time, leaving
// the kept ones (in no particular, but deterministic, order) at the front.
void ApplyTopP(std::vector<Candidate>& c, double top_p, double total, bool sorted) {
  const double target = top_p * total;
  // Invariant: [0, lo) holds the lo best candidates and `base` is their
  // mass (< target); [lo, hi) holds the next ones; the cut lies in [lo, hi).
  size_t lo = 0;
  size_t hi = c.size();
  double base = 0;
  if (!sorted) {
    while (hi - lo > 64) {
      const size_t mid = lo + (hi - lo) / 2;
      std::nth_element(c.begin() + lo, c.begin() + mid, c.begin() + hi, CandidateBefore);
      double mass = base;
      for (size_t i = lo; i <= mid; ++i) mass += c[i].weight;
      if (mass >= target) {
        hi = mid + 1;
      } else {
        base = mass;
        lo = mid + 1;
      }
    }
    std::sort(c.begin() + lo, c.begin() + hi, CandidateBefore);
  }
  for (size_t i = lo; i < hi; ++i) {
    base += c[i].weight;
    if (base >= target) {
      c.resize(i + 1);
      return;
    }
  }
  // Only rounding (a different summation order) gets here: the bisection
  // saw the mass reach the target by hi, or the target is the whole mass.
  c.resize(hi);
}

// min-p: drops p < min_p * p_max. The best candidate has weight 1 (it is
// never removed by top-k or top-p), so the rule is weight < min_p.
void ApplyMinP(std::vector<Candidate>& c, float min_p) {
  float max_weight = 0;
  for (const Candidate& x : c) max_weight = std::max(max_weight, x.weight);
  const float threshold = min_p * max_weight;
  c.erase(std::remove_if(c.begin(), c.end(), [&](const Candidate& x) { return x.weight < threshold; }), c.end());
}

// Inverse CDF over the kept candidates in id order (the order the GPU
// sampler can walk without sorting, so both draw the same token). A
// zero-weight candidate can never be chosen: the CDF does not rise at it.
int32_t Draw(std::vector<Candidate>& c, double uniform) {
  std::sort(c.begin(), c.end(), [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
  double total = 0;
  for (const Candidate& x : c) total += x.weight;
  const double u = uniform * total;
  double cdf = 0;
  for (const Candidate& x : c) {
    cdf += x.weight;
    if (u < cdf) return x.id;
  }
  // uniform * total can round up to total itself: clamp to the last kept
  // candidate that has any mass.
  for (auto it = c.rbegin(); it != c.rend(); ++it) {
    if (it->weight > 0) return it->id;
  }
  return c.front().id;
}

// Logprobs of the raw logits (vLLM's default "raw_logprobs"): before the
// penalties, temperature and truncation.
void FillLogprobs(std::span<const float> raw, int32_t chosen, int32_t n, SampleResult* r) {
  const int32_t vocab = static_cast<int32_t>(raw.size());
  float max = kNegInf;
  for (float x : raw) max = std::max(max, Clean(x));
  double sum = 0;
  for (float x : raw) sum += Clean(x) == max ? 1.0f : std::exp(Clean(x) - max);
  const double log_sum = std::log(sum);
  // Relative to the max, so a +-inf max still gives finite logprobs for
  // the tokens equal to it.
  auto logprob = [&](int32_t id) {
    const float x = Clean(raw[id]);
    return x == max ? static_cast<float>(-log_sum) : static_cast<float>((x - max) - log_sum);
  };
  const float chosen_logit = Clean(raw[chosen]);
  r->logprob_valid = true;
  r->logprob = logprob(chosen);
  int32_t rank = 1;
  for (int32_t i = 0; i < vocab; ++i) {
    if (Before(Clean(raw[i]), i, chosen_logit, chosen)) ++rank;
  }
  r->rank = rank;
  // The n best, kept sorted while scanning (n <= 20, so insertion is cheap
  // and nothing vocabulary-sized is allocated).
  std::vector<int32_t> best;
  best.reserve(static_cast<size_t>(n) + 1);
  for (int32_t i = 0; n > 0 && i < vocab; ++i) {
    const float x = Clean(raw[i]);
    if (best.size() == static_cast<size_t>(n) && !Before(x, i, Clean(raw[best.back()]), best.back())) continue;
    auto pos = std::find_if(best.begin(), best.end(), [&](int32_t b) { return Before(x, i, Clean(raw[b]), b); });
    best.insert(pos, i);
    if (best.size() > static_cast<size_t>(n)) best.pop_back();
  }
  for (int32_t id : best) r->top.push_back({id, logprob(id)});
}

}  // namespace

double SamplingUniform(uint64_t seed, uint64_t step) {
  // The top 53 bits of a hash of (seed, step): exactly representable, in [0, 1).
  return static_cast<double>(Mix(Mix(seed) ^ (step * 0xd1342543de82ef95ull + 1)) >> 11) * 0x1.0p-53;
}

SampleResult Sampler::Sample(std::span<const float> raw, const SamplingParams& p, const TokenHistory& history,
                             uint64_t seed, uint64_t step) const {
  SampleResult r;
  if (raw.empty()) return r;
  // Penalties need a private copy; without them the raw row is read in place.
  std::vector<float> penalized;
  std::span<const float> logits = raw;
  if (HasPenalties(p)) {
    penalized.assign(raw.begin(), raw.end());
    for (float& x : penalized) x = Clean(x);
    ApplyPenalties(penalized, p, history);
    logits = penalized;
  }
  if (p.greedy()) {
    r.token = Argmax(logits);
  } else {
    bool sorted = false;
    std::vector<Candidate> c = TopKCandidates(logits, p.top_k, &sorted);
    const double total = FillWeights(c, p.temperature);
    if (p.top_p < 1.0f) ApplyTopP(c, p.top_p, total, sorted);
    if (p.min_p > 0.0f) ApplyMinP(c, p.min_p);
    r.token = Draw(c, SamplingUniform(seed, step));
  }
  if (p.logprobs >= 0) FillLogprobs(raw, r.token, p.logprobs, &r);
  return r;
}

}  // namespace tandem
