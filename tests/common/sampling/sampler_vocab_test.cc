// The sampler on a Llama-3-sized vocabulary and on hostile logits: the
// kept set matches an independent full-sort reference (so the lazy top-p
// sort and nth_element top-k cut where they should), and NaN/inf logits or
// extreme temperatures never produce an excluded token.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <set>

#include "common/sampling/sampler.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

constexpr int kVocab = 128256;
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> RandomLogits(float scale, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> l(kVocab);
  for (float& x : l) x = normal(gen);
  return l;
}

// The tokens temperature/top-k/top-p/min-p keep, by a plain full sort in
// long double: independent of the sampler's lazy partial sorting.
std::set<int32_t> ReferenceKept(const std::vector<float>& logits, double t, int top_k, double top_p,
                                double min_p) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  if (top_k > 0 && static_cast<size_t>(top_k) < ids.size()) ids.resize(static_cast<size_t>(top_k));
  const long double max = logits[ids[0]];
  std::vector<long double> w;
  long double z = 0;
  for (int32_t id : ids) z += w.emplace_back(std::exp((logits[id] - max) / t));
  size_t keep = ids.size();
  long double mass = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    mass += w[i] / z;
    if (mass >= top_p) {
      keep = i + 1;
      break;
    }
  }
  std::set<int32_t> kept;
  for (size_t i = 0; i < keep; ++i) {
    if (w[i] >= min_p * w[0]) kept.insert(ids[i]);
  }
  return kept;
}

struct VocabCase {
  const char* name;
  float scale;  // logit spread: small = flat (top-p needs most of the vocabulary)
  float temperature;
  int top_k;
  float top_p;
  float min_p;
};

void PrintTo(const VocabCase& c, std::ostream* os) { *os << c.name; }

class LargeVocabTest : public testing::TestWithParam<VocabCase> {};

TEST_P(LargeVocabTest, DrawsStayInsideTheReferenceKeptSet) {
  const VocabCase& c = GetParam();
  const std::vector<float> logits = RandomLogits(c.scale, 11);
  const std::set<int32_t> kept = ReferenceKept(logits, c.temperature, c.top_k, c.top_p, c.min_p);
  ASSERT_FALSE(kept.empty());
  SamplingParams p;
  p.temperature = c.temperature;
  p.top_k = c.top_k;
  p.top_p = c.top_p;
  p.min_p = c.min_p;
  std::set<int32_t> seen;
  const int draws = 300;
  for (uint64_t step = 0; step < draws; ++step) {
    const int32_t t = Sampler().Sample(logits, p, {}, 5, step).token;
    ASSERT_TRUE(kept.contains(t)) << c.name << ": token " << t << " is outside the kept set of " << kept.size();
    seen.insert(t);
  }
  // The draws spread over the kept set rather than collapsing on one token
  // (every case keeps many tokens of similar weight).
  EXPECT_GT(seen.size(), std::min<size_t>(kept.size(), draws) / 4) << c.name;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, LargeVocabTest,
    testing::Values(VocabCase{"flat_top_p", 0.05f, 1.0f, 0, 0.9f, 0.0f},     // ~115k tokens kept
                    VocabCase{"peaked_top_p", 3.0f, 0.8f, 0, 0.5f, 0.0f},    // a few dozen kept
                    VocabCase{"top_k", 1.0f, 1.0f, 40, 1.0f, 0.0f},
                    VocabCase{"top_k_top_p", 1.0f, 1.0f, 1000, 0.3f, 0.0f},  // top-p inside top-k
                    VocabCase{"min_p", 2.0f, 1.0f, 0, 1.0f, 0.05f},
                    VocabCase{"all_three", 1.5f, 0.7f, 500, 0.8f, 0.02f}),
    [](const testing::TestParamInfo<VocabCase>& info) { return std::string(info.param.name); });

TEST(SamplerEdgeTest, NanAndInfiniteLogits) {
  SamplingParams p;
  // NaN is never drawn, however the draw falls.
  const std::vector<float> with_nan = {NAN, 0.0f, NAN, 0.5f};
  for (uint64_t step = 0; step < 500; ++step) {
    const int32_t t = Sampler().Sample(with_nan, p, {}, 1, step).token;
    ASSERT_TRUE(t == 1 || t == 3) << t;
  }
  // +inf wins outright, also against large finite logits.
  const std::vector<float> with_inf = {1e30f, kInf, 3.0f};
  for (uint64_t step = 0; step < 100; ++step) EXPECT_EQ(Sampler().Sample(with_inf, p, {}, 1, step).token, 1);
  // -inf (a masked token) is never drawn.
  const std::vector<float> masked = {-kInf, 0.0f, -kInf, 0.0f};
  for (uint64_t step = 0; step < 500; ++step) {
    const int32_t t = Sampler().Sample(masked, p, {}, 1, step).token;
    ASSERT_TRUE(t == 1 || t == 3) << t;
  }
  // Every logit -inf: some valid token, no crash.
  const std::vector<float> all_masked(8, -kInf);
  const int32_t t = Sampler().Sample(all_masked, p, {}, 1, 0).token;
  EXPECT_TRUE(t >= 0 && t < 8) << t;
  // Greedy never picks NaN.
  p.temperature = 0;
  EXPECT_EQ(Sampler().Sample(std::vector<float>{NAN, 1.0f, 2.0f}, p, {}, 1, 0).token, 2);
}

TEST(SamplerEdgeTest, ExtremeTemperatures) {
  const std::vector<float> logits = {0.1f, 0.3f, 0.2f};
  SamplingParams cold;
  cold.temperature = 1e-30f;  // 1/t overflows; (l - max) / t must still give 0, not NaN
  for (uint64_t step = 0; step < 200; ++step) EXPECT_EQ(Sampler().Sample(logits, cold, {}, 9, step).token, 1);
  SamplingParams hot;
  hot.temperature = 1e6f;  // nearly uniform
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 200; ++step) seen.insert(Sampler().Sample(logits, hot, {}, 9, step).token);
  EXPECT_EQ(seen.size(), 3u);
}

TEST(SamplerEdgeTest, TiesAtTheTruncationBoundaryAreCutByLowerId) {
  // Four equal logits; top-k 2 keeps ids 0 and 1 (ties to the lower id).
  const std::vector<float> logits = {1.0f, 1.0f, 1.0f, 1.0f};
  SamplingParams p;
  p.top_k = 2;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 500; ++step) seen.insert(Sampler().Sample(logits, p, {}, 4, step).token);
  EXPECT_EQ(seen, (std::set<int32_t>{0, 1}));
  // min-p 1 keeps every token tied with the best.
  SamplingParams m;
  m.min_p = 1.0f;
  seen.clear();
  const std::vector<float> two_best = {2.0f, 1.0f, 2.0f, 0.0f};
  for (uint64_t step = 0; step < 500; ++step) seen.insert(Sampler().Sample(two_best, m, {}, 4, step).token);
  EXPECT_EQ(seen, (std::set<int32_t>{0, 2}));
}

TEST(SamplerEdgeTest, TopKLargerThanTheVocabularyKeepsEverything) {
  const std::vector<float> logits = {0.0f, 0.1f, 0.2f};
  SamplingParams p;
  p.top_k = 1000;
  std::set<int32_t> seen;
  for (uint64_t step = 0; step < 300; ++step) seen.insert(Sampler().Sample(logits, p, {}, 2, step).token);
  EXPECT_EQ(seen.size(), 3u);
}

TEST(SamplerEdgeTest, UniformIsInUnitIntervalAndSpread) {
  double sum = 0;
  const int n = 100000;
  for (uint64_t step = 0; step < n; ++step) {
    const double u = SamplingUniform(77, step);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  // Mean of n uniforms: 0.5 +- 1/sqrt(12 n) ~ 0.0009; 5 sigma.
  EXPECT_NEAR(sum / n, 0.5, 0.0046);
  EXPECT_NE(SamplingUniform(1, 0), SamplingUniform(2, 0));
  EXPECT_NE(SamplingUniform(1, 0), SamplingUniform(1, 1));
}

}  // namespace
}  // namespace tandem
