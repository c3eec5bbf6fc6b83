// The GPU sampler (cuda::SampleRows, through the backend's own conversion
// in sample_rows.h) against the host Sampler, row by row: the same token
// for every combination of greedy, temperature, top-k, top-p, min-p and
// the three penalties, over many seeds and steps, and the same logprobs,
// ranks and top-n. Runs on the device (tests/cuda/device_run.sh, step
// unit); skips where there is no GPU (CI builds it only).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/engine/cuda/sample_rows.h"
#include "common/engine/cuda/sampling_kernels.h"
#include "common/sampling/sampler.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

bool HaveGpu() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();
  return ok;
}

// A device copy of `v`, freed on scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    if (n > 0) {
      EXPECT_EQ(cudaMalloc(&p_, n * sizeof(T)), cudaSuccess);
    }
  }
  explicit DeviceArray(const std::vector<T>& v) : DeviceArray(v.size()) {
    if (!v.empty()) {
      EXPECT_EQ(cudaMemcpy(p_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  ~DeviceArray() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return p_; }
  std::vector<T> ToHost() const {
    std::vector<T> v(n_);
    if (n_ > 0) {
      EXPECT_EQ(cudaMemcpy(v.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return v;
  }

 private:
  size_t n_;
  T* p_ = nullptr;
};

struct Case {
  std::string name;
  SamplingParams params;
};

SamplingParams Params(float temperature, int32_t top_k, float top_p, float min_p, int32_t logprobs = -1) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.logprobs = logprobs;
  return p;
}

std::vector<Case> Cases() {
  std::vector<Case> c = {
      {"greedy", Params(0.0f, 0, 1.0f, 0.0f)},
      {"greedy_logprobs20", Params(0.0f, 0, 1.0f, 0.0f, 20)},
      {"temperature_0.7", Params(0.7f, 0, 1.0f, 0.0f)},
      {"temperature_1.5_logprobs5", Params(1.5f, 0, 1.0f, 0.0f, 5)},
      {"top_k_1", Params(1.0f, 1, 1.0f, 0.0f)},
      {"top_k_40", Params(1.0f, 40, 1.0f, 0.0f)},
      {"top_p_0.9", Params(1.0f, 0, 0.9f, 0.0f)},
      {"top_p_0.3", Params(0.8f, 0, 0.3f, 0.0f, 0)},
      {"min_p_0.1", Params(1.0f, 0, 1.0f, 0.1f)},
      {"all_truncations", Params(0.7f, 50, 0.95f, 0.02f, 3)},
  };
  SamplingParams pen = Params(0.9f, 0, 0.95f, 0.0f, 2);
  pen.repetition_penalty = 1.3f;
  pen.frequency_penalty = 0.4f;
  pen.presence_penalty = 0.5f;
  c.push_back({"penalties_sampled", pen});
  SamplingParams pen_greedy = Params(0.0f, 0, 1.0f, 0.0f);
  pen_greedy.repetition_penalty = 2.0f;
  pen_greedy.presence_penalty = -1.0f;
  c.push_back({"penalties_greedy", pen_greedy});
  SamplingParams freq_only = Params(1.2f, 100, 1.0f, 0.0f);
  freq_only.frequency_penalty = 1.5f;
  c.push_back({"frequency_only_top_k", freq_only});
  return c;
}

class CudaSamplingTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(CudaSamplingTest, GpuRowsEqualTheHostSampler) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  const int64_t vocab = GetParam();
  constexpr int kRowsPerCase = 48;
  const std::vector<Case> cases = Cases();
  const int64_t rows = static_cast<int64_t>(cases.size()) * kRowsPerCase;

  // Logits like a model's: a few peaked rows, most flatter; every 8th row
  // has its maximum shared by two ids (greedy must pick the lower one).
  std::mt19937 rng(static_cast<uint32_t>(vocab));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(static_cast<size_t>(rows * vocab));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = 1.0f + static_cast<float>(r % 5);
    float* row = &logits[static_cast<size_t>(r * vocab)];
    for (int64_t v = 0; v < vocab; ++v) row[v] = scale * normal(rng);
    if (r % 8 == 0) {
      int64_t hi = 0;
      for (int64_t v = 1; v < vocab; ++v) hi = row[v] > row[hi] ? v : hi;
      row[(hi * 7 + 3) % vocab] = row[hi];
    }
  }
  // Histories for the penalties: prompt and output tokens with repeats,
  // drawn from the row's likeliest tokens so that the penalties matter.
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(rows)), outputs(static_cast<size_t>(rows));
  std::uniform_int_distribution<int32_t> any(0, static_cast<int32_t>(vocab - 1));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = &logits[static_cast<size_t>(r * vocab)];
    std::vector<int32_t> top;
    for (int32_t v = 0; v < vocab; ++v) {
      if (row[v] > 2.0f * (1.0f + static_cast<float>(r % 5))) top.push_back(v);
    }
    if (top.empty()) top.push_back(any(rng));
    for (int i = 0; i < 12; ++i) prompts[static_cast<size_t>(r)].push_back(i % 3 == 0 ? any(rng) : top[rng() % top.size()]);
    for (int i = 0; i < 9; ++i) outputs[static_cast<size_t>(r)].push_back(top[rng() % top.size()]);
    outputs[static_cast<size_t>(r)].push_back(static_cast<int32_t>(vocab + 5));  // out of vocabulary: ignored
  }
  std::vector<SampleSpec> specs(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    SampleSpec& s = specs[static_cast<size_t>(r)];
    s.params = &cases[static_cast<size_t>(r / kRowsPerCase)].params;
    s.history = {prompts[static_cast<size_t>(r)], outputs[static_cast<size_t>(r)]};
    s.seed = 1000003ull * static_cast<uint64_t>(r) + 17;
    s.step = static_cast<uint64_t>(r % 7) * 13;
  }

  const cuda::SampleRowsInput in = cuda::BuildSampleRows(specs, vocab);
  DeviceArray<float> d_logits(logits);
  DeviceArray<float> d_work(in.any_penalty ? logits.size() : 0);
  DeviceArray<cuda::SampleRowParams> d_params(in.params);
  DeviceArray<cuda::PenaltyEntry> d_penalties(in.penalties);
  DeviceArray<cuda::SampleRowResult> d_out(static_cast<size_t>(rows));
  cuda::SampleRows(d_logits.get(), d_work.get(), vocab, d_params.get(), d_penalties.get(), rows, d_out.get(), nullptr);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<cuda::SampleRowResult> out = d_out.ToHost();

  const Sampler host;
  int sampled_differently = 0;  // rows whose draw is not the argmax: the test reaches past greedy
  for (int64_t r = 0; r < rows; ++r) {
    const SampleSpec& s = specs[static_cast<size_t>(r)];
    const std::span<const float> row(&logits[static_cast<size_t>(r * vocab)], static_cast<size_t>(vocab));
    const SampleResult want = host.Sample(row, *s.params, s.history, s.seed, s.step);
    const SampleResult got = cuda::ToSampleResult(out[static_cast<size_t>(r)], in.params[static_cast<size_t>(r)]);
    const std::string where = absl::StrCat(cases[static_cast<size_t>(r / kRowsPerCase)].name, ", row ", r);
    ASSERT_EQ(got.token, want.token) << where;
    ASSERT_EQ(got.logprob_valid, want.logprob_valid) << where;
    int32_t argmax = 0;
    for (int32_t v = 1; v < vocab; ++v) argmax = row[v] > row[argmax] ? v : argmax;
    if (got.token != argmax) ++sampled_differently;
    if (!want.logprob_valid) continue;
    EXPECT_NEAR(got.logprob, want.logprob, 1e-4) << where;
    EXPECT_EQ(got.rank, want.rank) << where;
    ASSERT_EQ(got.top.size(), want.top.size()) << where;
    for (size_t j = 0; j < want.top.size(); ++j) {
      EXPECT_EQ(got.top[j].token, want.top[j].token) << where << ", top " << j;
      EXPECT_NEAR(got.top[j].logprob, want.top[j].logprob, 1e-4) << where << ", top " << j;
    }
  }
  // Most non-greedy rows (temperature up to 1.5 over thousands of tokens)
  // draw something other than the argmax; if none did, the comparison
  // above would only have checked argmaxes.
  EXPECT_GT(sampled_differently, rows / 4);
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, CudaSamplingTest, ::testing::Values(1000, 8192, 128256),
                         [](const ::testing::TestParamInfo<int64_t>& i) { return absl::StrCat("vocab", i.param); });

}  // namespace
}  // namespace tandem
