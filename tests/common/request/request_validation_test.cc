// The one set of request rules (common/request): each limit admits its
// boundary, refuses one past it with INVALID_ARGUMENT naming the field, and
// never echoes the oversized value back.
#include "common/request/request_validation.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace tandem {
namespace {

ModelConfig SmallModel() {
  ModelConfig m;
  m.vocab_size = 100;
  m.max_position_embeddings = 64;
  return m;
}

void ExpectRefused(const absl::Status& s, const std::string& field) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(field), std::string::npos) << s;
  EXPECT_LT(s.message().size(), 200u) << "the message must not carry the oversized value";
}

TEST(RequestValidationTest, RequestIdLengthAndControlCharacters) {
  EXPECT_TRUE(ValidateRequestId("").ok());
  EXPECT_TRUE(ValidateRequestId(std::string(kMaxRequestIdBytes, 'a')).ok());
  EXPECT_TRUE(ValidateRequestId("caf\xc3\xa9-42").ok());  // UTF-8 is fine
  ExpectRefused(ValidateRequestId(std::string(kMaxRequestIdBytes + 1, 'a')), "request_id");
  ExpectRefused(ValidateRequestId(std::string(3 << 20, 'x')), "request_id");
  ExpectRefused(ValidateRequestId("two\nlines"), "request_id");
}

TEST(RequestValidationTest, PromptBytesAndTokens) {
  EXPECT_TRUE(ValidatePromptText(std::string(kMaxPromptBytes, 'a')).ok());
  ExpectRefused(ValidatePromptText(std::string(kMaxPromptBytes + 1, 'a')), "prompt");
  const ModelConfig m = SmallModel();
  EXPECT_TRUE(ValidatePromptTokens(std::vector<int32_t>(63, 1), m).ok());
  ExpectRefused(ValidatePromptTokens({}, m), "empty");
  ExpectRefused(ValidatePromptTokens(std::vector<int32_t>(64, 1), m), "context");
  ExpectRefused(ValidatePromptTokens(std::vector<int32_t>{1, 100}, m), "vocabulary");
  ExpectRefused(ValidatePromptTokens(std::vector<int32_t>{-1}, m), "vocabulary");
  ModelConfig no_context = m;
  no_context.max_position_embeddings = 0;
  ExpectRefused(ValidatePromptTokens(std::vector<int32_t>(kMaxPromptTokens + 1, 1), no_context), "tokens");
}

TEST(RequestValidationTest, StopStringsAndIdsAreBounded) {
  SamplingParams sampling;
  StoppingParams stopping;
  stopping.stop.assign(kMaxStopStrings, std::string(kMaxStopStringBytes, 's'));
  stopping.stop_token_ids.assign(kMaxStopTokenIds, 3);
  EXPECT_TRUE(ValidateGenerationParams(sampling, stopping, 100).ok());
  StoppingParams many = stopping;
  many.stop.push_back("one more");
  ExpectRefused(ValidateGenerationParams(sampling, many, 100), "stop");
  StoppingParams long_one = stopping;
  long_one.stop[3] += "x";
  ExpectRefused(ValidateGenerationParams(sampling, long_one, 100), "stop string 3");
  StoppingParams ids = stopping;
  ids.stop_token_ids.push_back(4);
  ExpectRefused(ValidateGenerationParams(sampling, ids, 100), "stop_token_ids");
  // The ranges of the sampling and stopping fields are checked too.
  sampling.top_p = 0;
  ExpectRefused(ValidateGenerationParams(sampling, StoppingParams(), 100), "top_p");
}

}  // namespace
}  // namespace tandem
