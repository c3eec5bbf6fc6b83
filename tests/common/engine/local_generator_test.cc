// The single-process generator on the built-in default model: continuous
// batching gives every request the tokens it gets alone, preemption does
// not change outputs, stopping works end to end, no KV block leaks.
#include "common/engine/local_generator.h"

#include <map>

#include "common/default_model/default_model.h"
#include "common/engine/model_loader.h"
#include "common/tokenizer/byte_level.h"
#include "gtest/gtest.h"
#include "tests/testing/default_model_test.h"
#include "tests/testing/temp_dir.h"

namespace tandem {
namespace {

class LocalGeneratorTest : public testing::DefaultModelTest {
 protected:

  std::unique_ptr<Engine> MakeEngine(int32_t num_blocks, int32_t block_size = 16) {
    BackendOptions o;
    o.num_kv_blocks = num_blocks;
    o.block_size = block_size;
    o.num_threads = 2;
    auto backend = CreateBackend(*model_, o);
    EXPECT_TRUE(backend.ok()) << backend.status();
    return std::make_unique<Engine>(std::move(*backend));
  }

  GenerationRequest Request(const std::string& text, float temperature, uint64_t seed,
                            int max_new_tokens) {
    GenerationRequest r;
    r.prompt = model_->tokenizer->Encode(text, true);
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.stopping.max_new_tokens = max_new_tokens;
    r.stopping.ignore_eos = true;
    return r;
  }

  struct Output {
    std::vector<int32_t> tokens;
    std::string text;
    FinishReason reason = FinishReason::kNone;
    absl::Status error;
    int finishes = 0;
  };

  std::vector<Output> Run(Engine& engine, const std::vector<GenerationRequest>& requests,
                          LocalGeneratorOptions options = {}, LocalGenerator** out = nullptr) {
    std::vector<Output> outputs(requests.size());
    LocalGenerator generator(engine, *model_->tokenizer, options);
    absl::Status s = generator.Run(requests, [&](const GenerationEvent& e) {
      Output& o = outputs[e.request];
      EXPECT_EQ(o.finishes, 0) << "event after the end of request " << e.request;
      if (e.token >= 0) o.tokens.push_back(e.token);
      o.text += e.text;
      if (e.finished) {
        ++o.finishes;
        o.reason = e.finish_reason;
        o.error = e.error;
      }
    });
    EXPECT_TRUE(s.ok()) << s;
    last_preemptions_ = generator.num_preemptions();
    last_max_batch_ = generator.max_batch_seen();
    for (const Output& o : outputs) EXPECT_EQ(o.finishes, 1);
    EXPECT_EQ(engine.kv_cache().num_used_blocks(), 0) << "leaked KV blocks";
    return outputs;
  }

  int64_t last_preemptions_ = 0;
  int32_t last_max_batch_ = 0;
};



TEST_F(LocalGeneratorTest, BatchedRequestsGetTheTokensTheyGetAlone) {
  auto engine = MakeEngine(512);
  std::vector<GenerationRequest> requests = {
      Request("The quick brown fox", 0.0f, 0, 20),
      Request("Once upon a time there was", 0.8f, 11, 33),
      Request("def generate(prompt):", 1.0f, 12, 7),
      Request("Hello", 0.0f, 0, 41),
      Request("In the morning the sun rose over the hills and the fishermen", 0.7f, 13, 25),
  };
  requests[1].sampling.top_k = 20;
  requests[4].sampling.top_p = 0.9f;
  requests[4].sampling.repetition_penalty = 1.2f;

  std::vector<Output> alone;
  for (const GenerationRequest& r : requests) alone.push_back(Run(*engine, {r})[0]);
  const std::vector<Output> together = Run(*engine, requests);
  EXPECT_GE(last_max_batch_, 2);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(together[i].tokens, alone[i].tokens) << "request " << i;
    EXPECT_EQ(together[i].text, alone[i].text) << "request " << i;
    EXPECT_EQ(static_cast<int>(together[i].tokens.size()), requests[i].stopping.max_new_tokens);
    EXPECT_EQ(together[i].reason, FinishReason::kLength);
    // Stray bytes of the random model stream out as U+FFFD.
    EXPECT_EQ(together[i].text, SanitizeUtf8(model_->tokenizer->Decode(together[i].tokens, false)));
  }
}

TEST_F(LocalGeneratorTest, PreemptionUnderKvPressureDoesNotChangeOutputs) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    requests.push_back(Request("It was the best of times, it was the worst of times", 0.9f,
                               100 + i, 40));
  }
  auto roomy = MakeEngine(512, 4);
  const auto expected = Run(*roomy, requests);
  EXPECT_EQ(last_preemptions_, 0);
  // 6 sequences of ~14 + 40 tokens need ~84 blocks of 4; give them 40.
  auto tight = MakeEngine(40, 4);
  const auto got = Run(*tight, requests);
  EXPECT_GT(last_preemptions_, 0);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].tokens, expected[i].tokens) << "request " << i;
  }
}

TEST_F(LocalGeneratorTest, BatchLimitsAreRespectedAndAllRequestsFinish) {
  auto engine = MakeEngine(512);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 9; ++i) requests.push_back(Request("Hello, world!", 0.0f, 0, 5 + i));
  const auto out = Run(*engine, requests, LocalGeneratorOptions{3, 8192});
  EXPECT_EQ(last_max_batch_, 3);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(out[i].tokens.size(), 5 + i);
}

TEST_F(LocalGeneratorTest, StopStringsEndGenerationAndAreNotReturned) {
  auto engine = MakeEngine(512);
  GenerationRequest free_run = Request("The quick brown fox", 0.0f, 0, 30);
  const Output reference = Run(*engine, {free_run})[0];
  ASSERT_GE(reference.text.size(), 6u);
  // Stop at a piece of text the free run produces in its middle.
  const std::string stop = reference.text.substr(reference.text.size() / 2, 3);
  GenerationRequest stopped = free_run;
  stopped.stopping.stop = {stop};
  const Output out = Run(*engine, {stopped})[0];
  EXPECT_EQ(out.reason, FinishReason::kStop);
  EXPECT_EQ(out.text, reference.text.substr(0, reference.text.find(stop)));
  EXPECT_LT(out.tokens.size(), reference.tokens.size());
}

TEST_F(LocalGeneratorTest, StopTokenIdsAndEosStop) {
  auto engine = MakeEngine(512);
  GenerationRequest r = Request("Hello", 0.0f, 0, 30);
  const Output reference = Run(*engine, {r})[0];
  ASSERT_GE(reference.tokens.size(), 5u);
  GenerationRequest stopped = r;
  stopped.stopping.stop_token_ids = {reference.tokens[3]};
  const Output out = Run(*engine, {stopped})[0];
  EXPECT_EQ(out.reason, FinishReason::kStop);
  // Stops at the first occurrence of that id.
  size_t first = 0;
  while (reference.tokens[first] != reference.tokens[3]) ++first;
  EXPECT_EQ(out.tokens.size(), first + 1);
}

TEST_F(LocalGeneratorTest, InvalidRequestsEndWithAnErrorAndOthersStillRun) {
  auto engine = MakeEngine(512);
  GenerationRequest bad_temp = Request("Hello", -1.0f, 0, 4);
  GenerationRequest bad_id = Request("Hello", 0.0f, 0, 4);
  bad_id.prompt.push_back(static_cast<int32_t>(model_->config.vocab_size));
  GenerationRequest empty = Request("", 0.0f, 0, 4);
  empty.prompt.clear();
  GenerationRequest good = Request("Hello", 0.0f, 0, 4);
  const auto out = Run(*engine, {bad_temp, bad_id, empty, good});
  EXPECT_EQ(out[0].error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out[0].error.message().find("temperature"), std::string::npos) << out[0].error;
  EXPECT_EQ(out[1].error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out[2].error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(out[3].error.ok());
  EXPECT_EQ(out[3].tokens.size(), 4u);
}

TEST_F(LocalGeneratorTest, APromptLargerThanTheKvPoolIsResourceExhausted) {
  auto engine = MakeEngine(/*num_blocks=*/2, /*block_size=*/4);
  GenerationRequest r = Request("It was the best of times, it was the worst of times", 0.0f, 0, 4);
  const auto out = Run(*engine, {r});
  EXPECT_EQ(out[0].error.code(), absl::StatusCode::kResourceExhausted) << out[0].error;
}

}  // namespace
}  // namespace tandem
