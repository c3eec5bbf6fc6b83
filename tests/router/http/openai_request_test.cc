#include "router/http/openai_request.h"

#include <gtest/gtest.h>

#include "router/http/openai_response.h"

namespace tandem::router::http {
namespace {

std::string ParamOf(const absl::Status& s) { return ApiErrorFromStatus(s).param; }

TEST(OpenAiRequestTest, CompletionFieldsMapToTheGenerateRequest) {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(ApiKind::kCompletion, R"({
    "model": "m", "prompt": "Once upon", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 42,
    "stop": ["\n", "."], "presence_penalty": 0.5, "frequency_penalty": -0.25, "logprobs": 3, "n": 2,
    "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_EQ(r->n, 2);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->top_logprobs, 3);
  const v1::GenerateRequest& g = r->generate;
  EXPECT_EQ(g.text(), "Once upon");
  EXPECT_EQ(g.stopping().max_new_tokens(), 7);
  EXPECT_FLOAT_EQ(g.sampling().temperature(), 0.5f);
  EXPECT_FLOAT_EQ(g.sampling().top_p(), 0.9f);
  EXPECT_EQ(g.sampling().seed(), 42u);
  ASSERT_EQ(g.stopping().stop_size(), 2);
  EXPECT_EQ(g.stopping().stop(1), ".");
  EXPECT_FLOAT_EQ(g.sampling().presence_penalty(), 0.5f);
  EXPECT_FLOAT_EQ(g.sampling().frequency_penalty(), -0.25f);
  EXPECT_EQ(g.logprobs(), 3);
  EXPECT_TRUE(g.skip_special_tokens());
}

TEST(OpenAiRequestTest, DefaultsFollowOpenAi) {
  absl::StatusOr<OpenAiRequest> c = ParseOpenAiRequest(ApiKind::kCompletion, R"({"prompt": "x"})");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->generate.stopping().max_new_tokens(), 16);
  EXPECT_FALSE(c->generate.sampling().has_temperature());  // the router's 1.0
  EXPECT_FALSE(c->generate.has_logprobs());
  EXPECT_FALSE(c->stream);
  EXPECT_EQ(c->n, 1);
  // Chat runs to the context's end unless limited; max_completion_tokens
  // wins over max_tokens.
  absl::StatusOr<OpenAiRequest> chat =
      ParseOpenAiRequest(ApiKind::kChat, R"({"messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_GT(chat->generate.stopping().max_new_tokens(), 1 << 20);
  absl::StatusOr<OpenAiRequest> both = ParseOpenAiRequest(
      ApiKind::kChat, R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "max_completion_tokens": 4})");
  ASSERT_TRUE(both.ok());
  EXPECT_EQ(both->generate.stopping().max_new_tokens(), 4);
}

TEST(OpenAiRequestTest, PromptAsTokenIdsOrOneElementArrays) {
  absl::StatusOr<OpenAiRequest> ids = ParseOpenAiRequest(ApiKind::kCompletion, R"({"prompt": [1, 2, 3]})");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->generate.token_ids().ids_size(), 3);
  absl::StatusOr<OpenAiRequest> nested = ParseOpenAiRequest(ApiKind::kCompletion, R"({"prompt": [[5, 6]]})");
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(nested->generate.token_ids().ids(1), 6);
  absl::StatusOr<OpenAiRequest> one = ParseOpenAiRequest(ApiKind::kCompletion, R"({"prompt": ["hello"]})");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->generate.text(), "hello");
}

TEST(OpenAiRequestTest, ChatLogprobsAreABoolWithTopLogprobs) {
  absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(
      ApiKind::kChat, R"({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 2})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->generate.logprobs(), 2);
  absl::StatusOr<OpenAiRequest> bad =
      ParseOpenAiRequest(ApiKind::kChat, R"({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParamOf(bad.status()), "top_logprobs");
}

TEST(OpenAiRequestTest, RefusalsNameTheParam) {
  struct Case {
    ApiKind kind;
    const char* body;
    const char* param;  // "" when the error is about the whole body
  };
  const Case cases[] = {
      {ApiKind::kCompletion, "not json", ""},
      {ApiKind::kCompletion, "[1]", ""},
      {ApiKind::kCompletion, R"({})", "prompt"},
      {ApiKind::kCompletion, R"({"prompt": 5})", "prompt"},
      {ApiKind::kCompletion, R"({"prompt": ["a", "b"]})", "prompt"},
      {ApiKind::kCompletion, R"({"prompt": [1, -2]})", "prompt"},
      {ApiKind::kCompletion, R"({"prompt": "x", "max_tokens": 0})", "max_tokens"},
      {ApiKind::kCompletion, R"({"prompt": "x", "max_tokens": "7"})", "max_tokens"},
      {ApiKind::kCompletion, R"({"prompt": "x", "temperature": "hot"})", "temperature"},
      {ApiKind::kCompletion, R"({"prompt": "x", "n": 0})", "n"},
      {ApiKind::kCompletion, R"({"prompt": "x", "n": 17})", "n"},
      {ApiKind::kCompletion, R"({"prompt": "x", "logprobs": 21})", "logprobs"},
      {ApiKind::kCompletion, R"({"prompt": "x", "stop": [1]})", "stop"},
      {ApiKind::kCompletion, R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options"},
      {ApiKind::kCompletion, R"({"prompt": "x", "echo": true})", "echo"},
      {ApiKind::kCompletion, R"({"prompt": "x", "best_of": 3})", "best_of"},
      {ApiKind::kCompletion, R"({"prompt": "x", "model": 3})", "model"},
      {ApiKind::kChat, R"({"messages": []})", "messages"},
      {ApiKind::kChat, R"({"messages": [{"content": "no role"}]})", "messages"},
      {ApiKind::kChat, R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})",
       "tools"},
      {ApiKind::kChat, R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 2})", "logprobs"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<OpenAiRequest> r = ParseOpenAiRequest(c.kind, c.body);
    ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(ParamOf(r.status()), c.param) << c.body << ": " << r.status();
    EXPECT_EQ(ApiErrorFromStatus(r.status()).http_status, 400);
  }
}

TEST(OpenAiRequestTest, CacheSaltAndPriorityPassThrough) {
  absl::StatusOr<OpenAiRequest> r =
      ParseOpenAiRequest(ApiKind::kCompletion, R"({"prompt": "x", "cache_salt": "tenant-a", "priority": 3})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.cache_salt(), "tenant-a");
  EXPECT_EQ(r->generate.priority(), 3);
  EXPECT_EQ(ParamOf(ParseOpenAiRequest(ApiKind::kCompletion, R"({"prompt": "x", "cache_salt": 1})").status()),
            "cache_salt");
}

TEST(OpenAiRequestTest, NullFieldsCountAsAbsent) {
  absl::StatusOr<OpenAiRequest> r =
      ParseOpenAiRequest(ApiKind::kCompletion, R"({"prompt": "x", "stop": null, "seed": null, "logprobs": null})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->generate.stopping().stop_size(), 0);
  EXPECT_FALSE(r->generate.sampling().has_seed());
  EXPECT_FALSE(r->logprobs);
}

}  // namespace
}  // namespace tandem::router::http
