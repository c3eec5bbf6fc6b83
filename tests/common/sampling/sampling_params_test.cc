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

}  // namespace
}  // namespace tandem
