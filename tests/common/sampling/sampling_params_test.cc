// Validation errors name the field.
#include "common/sampling/sampling_params.h"

#include <cmath>

#include "gtest/gtest.h"

namespace tandem {
namespace {

void ExpectInvalid(const SamplingParams& p, const std::string& field) {
  absl::Status s = ValidateSamplingParams(p, 100);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_NE(s.message().find(field), std::string::npos) << s;
}

TEST(SamplingParamsTest, OutOfRangeSamplingFieldsAreNamed) {
  EXPECT_TRUE(ValidateSamplingParams(SamplingParams(), 100).ok());
  SamplingParams p;
  p.temperature = -1;
  ExpectInvalid(p, "temperature");
  p = {};
  p.temperature = NAN;
  ExpectInvalid(p, "temperature");
  p = {};
  p.top_p = 0;
  ExpectInvalid(p, "top_p");
  p = {};
  p.top_k = -2;
  ExpectInvalid(p, "top_k");
  p = {};
  p.min_p = 1.5f;
  ExpectInvalid(p, "min_p");
  p = {};
  p.repetition_penalty = 0;
  ExpectInvalid(p, "repetition_penalty");
  p = {};
  p.presence_penalty = 3;
  ExpectInvalid(p, "presence_penalty");
  p = {};
  p.frequency_penalty = -2.5f;
  ExpectInvalid(p, "frequency_penalty");
  p = {};
  p.logprobs = 21;
  ExpectInvalid(p, "logprobs");
}

TEST(SamplingParamsTest, OutOfRangeStoppingFieldsAreNamed) {
  StoppingParams s;
  EXPECT_TRUE(ValidateStoppingParams(s, 100).ok());
  s.max_new_tokens = 0;
  EXPECT_NE(ValidateStoppingParams(s, 100).message().find("max_new_tokens"), std::string::npos);
  s = {};
  s.min_new_tokens = 20;
  EXPECT_NE(ValidateStoppingParams(s, 100).message().find("min_new_tokens"), std::string::npos);
  s = {};
  s.stop_token_ids = {100};
  EXPECT_NE(ValidateStoppingParams(s, 100).message().find("stop_token_ids"), std::string::npos);
  s = {};
  s.stop = {""};
  EXPECT_NE(ValidateStoppingParams(s, 100).message().find("stop"), std::string::npos);
}


TEST(SamplingParamsTest, BoundaryValuesAreAccepted) {
  const auto ok = [](auto set) {
    SamplingParams p;
    set(p);
    return ValidateSamplingParams(p, 100).ok();
  };
  EXPECT_TRUE(ok([](SamplingParams& p) { p.temperature = 0; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.top_p = 1.0f; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.top_p = 1e-6f; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.min_p = 1.0f; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.top_k = -1; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.top_k = 1000000; }));  // above the vocabulary: clamped
  EXPECT_TRUE(ok([](SamplingParams& p) { p.presence_penalty = -2.0f; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.frequency_penalty = 2.0f; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.logprobs = 20; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.logprobs = 0; }));
  EXPECT_TRUE(ok([](SamplingParams& p) { p.repetition_penalty = 0.5f; }));
  StoppingParams s;
  s.max_new_tokens = 1;
  s.min_new_tokens = 1;
  s.stop_token_ids = {0, 99};
  s.stop = {"x"};
  EXPECT_TRUE(ValidateStoppingParams(s, 100).ok());
}

TEST(SamplingParamsTest, MoreOutOfRangeValuesAreNamed) {
  SamplingParams p;
  p.top_p = 1.01f;
  ExpectInvalid(p, "top_p");
  p = {};
  p.top_p = NAN;
  ExpectInvalid(p, "top_p");
  p = {};
  p.min_p = -0.1f;
  ExpectInvalid(p, "min_p");
  p = {};
  p.logprobs = -2;
  ExpectInvalid(p, "logprobs");
  p = {};
  p.repetition_penalty = NAN;
  ExpectInvalid(p, "repetition_penalty");
  p = {};
  p.temperature = INFINITY;
  ExpectInvalid(p, "temperature");
  StoppingParams s;
  s.min_new_tokens = -1;
  EXPECT_NE(ValidateStoppingParams(s, 100).message().find("min_new_tokens"), std::string::npos);
  s = {};
  s.stop_token_ids = {-1};
  const absl::Status neg = ValidateStoppingParams(s, 100);
  EXPECT_EQ(neg.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(neg.message().find("stop_token_ids"), std::string::npos);
}

}  // namespace
}  // namespace tandem
