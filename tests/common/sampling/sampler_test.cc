// The sampler: greedy is argmax, seeds repeat, truncation never leaks an
// excluded token, penalties and logprobs are what they say, and sampled
// frequencies match the target distribution (chi-square, fixed seed).
#include "common/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "gtest/gtest.h"

namespace tandem {
namespace {

const std::vector<float> kLogits = {1.0f, 3.0f, 0.5f, 2.5f, -1.0f, 2.0f, 0.0f, 1.5f, -0.5f, 2.9f};

SampleResult Draw(const SamplingParams& p, uint64_t seed, uint64_t step, std::vector<float> logits = kLogits,
                  std::vector<int32_t> prompt = {}, std::vector<int32_t> output = {}) {
  return Sampler().Sample(logits, p, TokenHistory{prompt, output}, seed, step);
}

TEST(SamplerTest, GreedyIsArgmaxWithTiesToTheLowestId) {
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(Draw(p, 1, 0).token, 1);
  EXPECT_EQ(Draw(p, 1, 0, {0.5f, 2.0f, 2.0f, 1.0f}).token, 1);
}

TEST(SamplerTest, SameSeedAndStepRepeatOtherwiseTheyVary) {
  SamplingParams p;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 200; ++step) {
    const int32_t t = Draw(p, 42, step).token;
    EXPECT_EQ(t, Draw(p, 42, step).token);
    seen.insert(t);
  }
  EXPECT_GT(seen.size(), 5u);
  int differ = 0;
  for (uint64_t step = 0; step < 200; ++step) differ += Draw(p, 42, step).token != Draw(p, 43, step).token;
  EXPECT_GT(differ, 50);
}

TEST(SamplerTest, TruncationNeverEmitsAnExcludedToken) {
  struct Case {
    SamplingParams p;
    std::set<int32_t> allowed;
  };
  std::vector<Case> cases;
  SamplingParams top_k;
  top_k.top_k = 3;  // logits 3.0 (1), 2.9 (9), 2.5 (3)
  cases.push_back({top_k, {1, 9, 3}});
  SamplingParams top1;
  top1.top_k = 1;
  cases.push_back({top1, {1}});
  SamplingParams tiny_p;
  tiny_p.top_p = 1e-6f;
  cases.push_back({tiny_p, {1}});
  SamplingParams min_p;
  min_p.min_p = 0.5f;  // keeps p >= 0.5 * p(1): logits within ln 2 of 3.0
  cases.push_back({min_p, {1, 9, 3}});
  SamplingParams min_p1;
  min_p1.min_p = 1.0f;
  cases.push_back({min_p1, {1}});
  SamplingParams hot;
  hot.temperature = 5.0f;
  hot.top_k = 2;
  cases.push_back({hot, {1, 9}});
  for (const Case& c : cases) {
    std::set<int32_t> seen;
    for (uint64_t step = 0; step < 3000; ++step) {
      const int32_t t = Draw(c.p, 7, step).token;
      ASSERT_TRUE(c.allowed.contains(t)) << "token " << t << " top_k " << c.p.top_k << " top_p " << c.p.top_p
                                         << " min_p " << c.p.min_p;
      seen.insert(t);
    }
    EXPECT_EQ(seen, c.allowed) << "every allowed token is reachable";
  }
}

TEST(SamplerTest, PenaltiesChangeTheLogitsAsSpecified) {
  SamplingParams p;
  p.temperature = 0;
  // Repetition penalty 2 on token 1 (3.0 -> 1.5) makes 9 (2.9) the argmax.
  p.repetition_penalty = 2.0f;
  EXPECT_EQ(Draw(p, 0, 0, kLogits, /*prompt=*/{1}).token, 9);
  // A negative logit is multiplied: token 0 at -1 with penalty 2 -> -2.
  EXPECT_EQ(Draw(p, 0, 0, {-1.0f, -1.5f}, {0}).token, 1);
  // Frequency 0.1 * 2 occurrences + presence 0.05 on token 1: 3.0 -> 2.75 < 2.9.
  SamplingParams f;
  f.temperature = 0;
  f.frequency_penalty = 0.1f;
  f.presence_penalty = 0.05f;
  EXPECT_EQ(Draw(f, 0, 0, kLogits, {}, {1, 1}).token, 9);
  // Frequency/presence penalties ignore the prompt.
  EXPECT_EQ(Draw(f, 0, 0, kLogits, {1, 1}, {}).token, 1);
}

TEST(SamplerTest, LogprobsRankAndTopAlternatives) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 3;
  const SampleResult r = Draw(p, 0, 0);
  double z = 0;
  for (float l : kLogits) z += std::exp(static_cast<double>(l));
  ASSERT_TRUE(r.logprob_valid);
  EXPECT_NEAR(r.logprob, 3.0 - std::log(z), 1e-5);
  EXPECT_EQ(r.rank, 1);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 1);
  EXPECT_EQ(r.top[1].token, 9);
  EXPECT_EQ(r.top[2].token, 3);
  EXPECT_NEAR(r.top[2].logprob, 2.5 - std::log(z), 1e-5);
  SamplingParams none;
  EXPECT_FALSE(Draw(none, 0, 0).logprob_valid);
  // The rank of a sampled, less likely token.
  SamplingParams k2;
  k2.top_k = 2;
  k2.logprobs = 0;
  for (uint64_t step = 0; step < 50; ++step) {
    const SampleResult s = Draw(k2, 3, step);
    EXPECT_EQ(s.rank, s.token == 1 ? 1 : 2);
  }
}

// Chi-square critical values at p = 1e-4 by degrees of freedom.
double ChiSquareCritical(int dof) {
  static const double kTable[] = {0, 15.14, 18.42, 21.11, 23.51, 25.74, 27.86, 29.88, 31.83, 33.72};
  return kTable[dof];
}

// The target of temperature t and top-p over kLogits, computed directly.
std::map<int32_t, double> Target(double t, double top_p) {
  std::vector<int32_t> ids(kLogits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [](int32_t a, int32_t b) { return kLogits[a] > kLogits[b]; });
  double z = 0;
  for (float l : kLogits) z += std::exp(l / t);
  std::map<int32_t, double> p;
  double mass = 0;
  for (int32_t id : ids) {
    p[id] = std::exp(kLogits[id] / t) / z;
    mass += p[id];
    if (mass >= top_p) break;
  }
  for (auto& [id, q] : p) q /= mass;
  return p;
}

double ChiSquare(const std::map<int32_t, int>& counts, const std::map<int32_t, double>& target, int n) {
  double chi2 = 0;
  for (const auto& [id, q] : target) {
    const double expected = q * n;
    const double observed = counts.contains(id) ? counts.at(id) : 0;
    chi2 += (observed - expected) * (observed - expected) / expected;
  }
  return chi2;
}

TEST(SamplerTest, FrequenciesMatchTheTargetDistribution) {
  SamplingParams p;
  p.temperature = 0.7f;
  p.top_p = 0.9f;
  const int n = 200000;
  std::map<int32_t, int> counts;
  for (int step = 0; step < n; ++step) ++counts[Draw(p, 2024, static_cast<uint64_t>(step)).token];
  const auto target = Target(0.7, 0.9);
  for (const auto& [id, c] : counts) EXPECT_TRUE(target.contains(id)) << "token " << id << " is outside top-p";
  const int dof = static_cast<int>(target.size()) - 1;
  ASSERT_GE(dof, 2);
  EXPECT_LT(ChiSquare(counts, target, n), ChiSquareCritical(dof));
  // The test has power: a slightly different temperature is rejected.
  EXPECT_GT(ChiSquare(counts, Target(0.75, 0.9), n), ChiSquareCritical(dof));
}


// Target of temperature t, top-k and min-p over kLogits, computed directly.
std::map<int32_t, double> TargetTopKMinP(double t, int top_k, double min_p) {
  std::vector<int32_t> ids(kLogits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::sort(ids.begin(), ids.end(), [](int32_t a, int32_t b) { return kLogits[a] > kLogits[b]; });
  ids.resize(static_cast<size_t>(top_k));
  const double best = std::exp(kLogits[ids[0]] / t);
  std::map<int32_t, double> p;
  double z = 0;
  for (int32_t id : ids) {
    const double w = std::exp(kLogits[id] / t);
    if (w >= min_p * best) z += p[id] = w;
  }
  for (auto& [id, q] : p) q /= z;
  return p;
}

TEST(SamplerTest, TopKAndMinPFrequenciesMatchTheTarget) {
  SamplingParams p;
  p.temperature = 1.3f;
  // top-k 6 keeps 1, 9, 3, 5, 7, 0; at t = 1.3 their weights relative to
  // the best are 1, .93, .68, .46, .32, .21, so min-p 0.3 then drops 0.
  p.top_k = 6;
  p.min_p = 0.3f;
  const int n = 100000;
  std::map<int32_t, int> counts;
  for (int step = 0; step < n; ++step) ++counts[Draw(p, 99, static_cast<uint64_t>(step)).token];
  const auto target = TargetTopKMinP(1.3, 6, 0.3);
  for (const auto& [id, c] : counts) EXPECT_TRUE(target.contains(id)) << "token " << id << " was truncated";
  const int dof = static_cast<int>(target.size()) - 1;
  ASSERT_EQ(dof, 4);
  EXPECT_LT(ChiSquare(counts, target, n), ChiSquareCritical(dof));
  EXPECT_GT(ChiSquare(counts, TargetTopKMinP(1.0, 6, 0.3), n), ChiSquareCritical(dof));
}

TEST(SamplerTest, PenaltyDetails) {
  // A repetition penalty counts a token once however often it repeats:
  // 2.0 / 1.2 = 1.67 > 1.5, where compounding three times (2.0 / 1.728 =
  // 1.16) would hand the argmax to token 1.
  SamplingParams rep;
  rep.temperature = 0;
  rep.repetition_penalty = 1.2f;
  EXPECT_EQ(Draw(rep, 0, 0, {2.0f, 1.5f}, {0, 0}, {0}).token, 0);
  // It covers output tokens as well as the prompt.
  EXPECT_EQ(Draw(rep, 0, 0, {2.0f, 1.8f}, {}, {0}).token, 1);
  // Repetition, then frequency, on output {1, 9}: 1 -> 3.0/1.2 - 0.1 = 2.4,
  // 9 -> 2.9/1.2 - 0.1 = 2.32, so 3 (2.5, untouched) wins; without the
  // repetition penalty token 1 (2.9) would.
  SamplingParams both;
  both.temperature = 0;
  both.repetition_penalty = 1.2f;
  both.frequency_penalty = 0.1f;
  EXPECT_EQ(Draw(both, 0, 0, kLogits, {}, {1, 9}).token, 3);
  both.repetition_penalty = 1.0f;
  EXPECT_EQ(Draw(both, 0, 0, kLogits, {}, {1, 9}).token, 1);
  // A negative presence penalty raises a token: 2.5 + 0.6 = 3.1 > 3.0.
  SamplingParams pres;
  pres.temperature = 0;
  pres.presence_penalty = -0.6f;
  pres.logprobs = 0;
  const SampleResult r = Draw(pres, 0, 0, kLogits, {}, {3});
  EXPECT_EQ(r.token, 3);
  // Logprobs stay those of the raw logits, whatever the penalties did:
  // under the raw logits token 3 (2.5) ranks after 1 (3.0) and 9 (2.9).
  double z = 0;
  for (float l : kLogits) z += std::exp(static_cast<double>(l));
  EXPECT_NEAR(r.logprob, 2.5 - std::log(z), 1e-5);
  EXPECT_EQ(r.rank, 3);
  EXPECT_TRUE(r.top.empty());
}

TEST(SamplerTest, LogprobTiesRankByLowerIdAndTopMatchesLogSoftmax) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 5;
  const SampleResult r = Draw(p, 0, 0, logits);
  EXPECT_EQ(r.token, 1);
  EXPECT_EQ(r.rank, 1);
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  const std::vector<int32_t> order = {1, 3, 4, 0, 2};
  ASSERT_EQ(r.top.size(), order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(r.top[i].token, order[i]) << i;
    EXPECT_NEAR(r.top[i].logprob, logits[order[i]] - std::log(z), 1e-6) << i;
  }
  // The rank of token 3 (tied with 1, higher id) is 2.
  SamplingParams rep;
  rep.temperature = 0;
  rep.logprobs = 1;
  rep.repetition_penalty = 4.0f;  // 1 drops to 0.5: token 3 is the argmax
  const SampleResult s = Draw(rep, 0, 0, logits, {1});
  EXPECT_EQ(s.token, 3);
  EXPECT_EQ(s.rank, 2);
  ASSERT_EQ(s.top.size(), 1u);
  EXPECT_EQ(s.top[0].token, 1);
  EXPECT_NEAR(s.logprob, 2.0 - std::log(z), 1e-6);
}

}  // namespace
}  // namespace tandem
