#include "router/http/openai_response.h"

#include <gtest/gtest.h>

#include "common/default_model/default_model.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/testing/temp_dir.h"

namespace tandem::router::http {
namespace {

using nlohmann::json;

class OpenAiResponseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    ASSERT_TRUE(WriteDefaultModel(dir_->str()).ok());
    auto t = Tokenizer::FromDir(dir_->str());
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = t->release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    delete dir_;
  }
  static v1::GenerateResponse Token(int32_t id, const std::string& text, std::optional<float> logprob = {}) {
    v1::GenerateResponse r;
    v1::GeneratedToken* t = r.add_tokens();
    t->set_id(id);
    t->set_text(text);
    if (logprob.has_value()) {
      t->set_logprob(*logprob);
      v1::TokenLogprob* alt = t->add_top_logprobs();
      alt->set_token_id(id);
      alt->set_text("alt");
      alt->set_logprob(*logprob);
    }
    return r;
  }
  static inline testing::TempDir* dir_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
};

TEST_F(OpenAiResponseTest, ErrorsHaveOpenAisShapeAndStatus) {
  const std::pair<absl::Status, int> cases[] = {
      {absl::InvalidArgumentError("bad"), 400},     {absl::UnauthenticatedError("who"), 401},
      {absl::NotFoundError("none"), 404},           {absl::ResourceExhaustedError("full"), 429},
      {absl::UnavailableError("no worker"), 503},   {absl::DeadlineExceededError("late"), 504},
      {absl::InternalError("bug"), 500},
  };
  for (const auto& [status, http] : cases) {
    ApiError e = ApiErrorFromStatus(status);
    EXPECT_EQ(e.http_status, http) << status;
    json body = json::parse(ErrorBody(e));
    EXPECT_EQ(body["error"]["message"], std::string(status.message()));
    EXPECT_TRUE(body["error"]["type"].is_string());
    EXPECT_TRUE(body["error"]["param"].is_null());
    EXPECT_TRUE(body["error"].contains("code"));
  }
  json with_param = json::parse(ErrorBody(ApiErrorFromStatus(ParamError("n", "'n' is 0"))));
  EXPECT_EQ(with_param["error"]["param"], "n");
  ApiError from_grpc = ApiErrorFromGrpc(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full"));
  EXPECT_EQ(from_grpc.http_status, 429);
  EXPECT_EQ(from_grpc.message, "queue full");
}

TEST_F(OpenAiResponseTest, ChoiceAccumulatesTextTailFinishAndUsage) {
  Choice c;
  c.Add(DeltaOf(Token(5, "Once"), *tokenizer_));
  v1::GenerateResponse last = Token(6, " upon");
  last.set_text_tail(" a");
  last.set_finish_reason(v1::FINISH_REASON_LENGTH);
  last.mutable_usage()->set_prompt_tokens(3);
  last.mutable_usage()->set_completion_tokens(2);
  c.Add(DeltaOf(last, *tokenizer_));
  EXPECT_EQ(c.text, "Once upon a");
  EXPECT_EQ(c.finish_reason, "length");
  EXPECT_EQ(c.prompt_tokens, 3);
  EXPECT_EQ(c.completion_tokens, 2);

  ResponseHeader h{"cmpl-1", 1700000000, "tandem-default"};
  json text = CompletionResponse(ApiKind::kCompletion, h, {c, c}, false);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["model"], "tandem-default");
  ASSERT_EQ(text["choices"].size(), 2u);
  EXPECT_EQ(text["choices"][1]["index"], 1);
  EXPECT_EQ(text["choices"][0]["text"], "Once upon a");
  EXPECT_TRUE(text["choices"][0]["logprobs"].is_null());
  // n choices of one prompt: the prompt counts once.
  EXPECT_EQ(text["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(text["usage"]["completion_tokens"], 4);
  EXPECT_EQ(text["usage"]["total_tokens"], 7);

  json chat = CompletionResponse(ApiKind::kChat, h, {c}, false);
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], "Once upon a");
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
}

TEST_F(OpenAiResponseTest, LogprobsInBothShapes) {
  Choice c;
  c.Add(DeltaOf(Token(70, "F", -0.5f), *tokenizer_));
  c.Add(DeltaOf(Token(71, "G", -1.5f), *tokenizer_));
  ASSERT_EQ(c.logprobs.size(), 2u);
  ResponseHeader h{"x", 0, "m"};
  json text = CompletionResponse(ApiKind::kCompletion, h, {c}, true)["choices"][0]["logprobs"];
  ASSERT_EQ(text["tokens"].size(), 2u);
  EXPECT_FLOAT_EQ(text["token_logprobs"][1].get<float>(), -1.5f);
  EXPECT_FLOAT_EQ(text["top_logprobs"][0]["alt"].get<float>(), -0.5f);
  EXPECT_EQ(text["text_offset"][0], 0);
  EXPECT_EQ(text["text_offset"][1], text["tokens"][0].get<std::string>().size());
  json chat = CompletionResponse(ApiKind::kChat, h, {c}, true)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(chat.size(), 2u);
  EXPECT_FLOAT_EQ(chat[0]["logprob"].get<float>(), -0.5f);
  EXPECT_EQ(chat[0]["top_logprobs"][0]["token"], "alt");
  EXPECT_EQ(chat[0]["top_logprobs"][0]["bytes"], json::array({'a', 'l', 't'}));
}

TEST_F(OpenAiResponseTest, StreamChunksAndDone) {
  ResponseHeader h{"chatcmpl-1", 5, "m"};
  ChoiceDelta d;
  d.text = "Hi";
  json first = StreamChunk(ApiKind::kChat, h, 0, d, false, /*first=*/true, /*with_usage_null=*/true, 0);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(first["choices"][0]["delta"]["content"], "Hi");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(first.contains("usage") && first["usage"].is_null());
  ChoiceDelta end;
  end.finish_reason = "stop";
  json last = StreamChunk(ApiKind::kChat, h, 1, end, false, false, false, 0);
  EXPECT_FALSE(last["choices"][0]["delta"].contains("role"));
  EXPECT_FALSE(last["choices"][0]["delta"].contains("content"));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(last["choices"][0]["index"], 1);
  EXPECT_FALSE(last.contains("usage"));
  json text = StreamChunk(ApiKind::kCompletion, h, 0, d, false, true, false, 0);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "Hi");
  json usage = UsageChunk(ApiKind::kCompletion, h, 4, 6);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 10);
  EXPECT_EQ(SseEvent(json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
}

TEST_F(OpenAiResponseTest, ModelsListNamesTheServedModel) {
  json m = ModelsList("my-model", 7, 2048, 512, GenerationConfig{});
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "my-model");
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_EQ(m["data"][0]["max_model_len"], 2048);
  EXPECT_EQ(m["data"][0]["vocab_size"], 512);
  // No generation_config.json sampling values: an empty object, not absent,
  // so a client can tell "no defaults" from an older server.
  EXPECT_EQ(m["data"][0]["generation_defaults"], json::object());
}

TEST_F(OpenAiResponseTest, ModelsListReportsOnlyTheDefaultsTheModelSets) {
  GenerationConfig defaults;
  defaults.temperature = 0.5f;
  defaults.top_k = 20;
  json d = ModelsList("m", 7, 2048, 512, defaults)["data"][0]["generation_defaults"];
  EXPECT_FLOAT_EQ(d["temperature"].get<float>(), 0.5f);
  EXPECT_EQ(d["top_k"], 20);
  EXPECT_FALSE(d.contains("top_p"));
  EXPECT_FALSE(d.contains("repetition_penalty"));

  defaults.top_p = 0.75f;
  defaults.repetition_penalty = 1.25f;
  d = ModelsList("m", 7, 2048, 512, defaults)["data"][0]["generation_defaults"];
  EXPECT_FLOAT_EQ(d["top_p"].get<float>(), 0.75f);
  EXPECT_FLOAT_EQ(d["repetition_penalty"].get<float>(), 1.25f);
}

}  // namespace
}  // namespace tandem::router::http
