// The OpenAI-compatible request bodies (POST /v1/completions and
// /v1/chat/completions) read into the router's own GenerateRequest. Only
// the JSON's shape and the OpenAI-only rules are checked here; the ranges
// of the sampling fields are the router's one set of rules
// (common/request, common/sampling), applied when the call runs.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "tandem/v1/generate.pb.h"

namespace tandem::router::http {

enum class ApiKind { kCompletion, kChat };

// Largest `n` one request may ask for: each sequence is its own call
// through admission and placement.
inline constexpr int kMaxChoices = 16;
// Most alternatives per token: completions' `logprobs`, chat's
// `top_logprobs` (OpenAI allows 5 and 20; the router 20).
inline constexpr int kMaxTopLogprobs = 20;

struct OpenAiRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;  // as sent; empty when the client named none
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  // Whether each token's logprob goes back (completions: `logprobs` set;
  // chat: `logprobs: true`), and how many alternatives with it.
  bool logprobs = false;
  int top_logprobs = 0;
  // Chat: the conversation, to be rendered by the model's chat template.
  nlohmann::json messages;
  // Chat: template variables the client passes (`chat_template_kwargs`).
  nlohmann::json chat_template_kwargs = nlohmann::json::object();
  bool add_generation_prompt = true;
  // The prompt (completions; chat once rendered), sampling and stopping;
  // request_id is left for the server to set per choice.
  v1::GenerateRequest generate;
};

// INVALID_ARGUMENT for a body that is not a JSON object, a field of the
// wrong type, an unsupported feature (several prompts, echo, best_of > n,
// tools, ...) or a value OpenAI's rules refuse (n out of [1, 16], logprobs
// out of range, stream_options without stream). The status's payload
// kParamPayload names the offending field (OpenAI's `param`).
absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(ApiKind kind, std::string_view body);

// Type URL of the payload naming the request field an error is about.
inline constexpr std::string_view kParamPayload = "tandem.dev/openai-param";
// INVALID_ARGUMENT about `param`, with the payload set.
absl::Status ParamError(std::string_view param, std::string_view message);

}  // namespace tandem::router::http
