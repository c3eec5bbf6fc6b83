// The OpenAI-shaped objects the HTTP API sends: completion and chat
// responses, their streaming chunks, /v1/models, and error bodies with
// the HTTP status that goes with them. Pure functions of the router's
// GenerateResponses; no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"
#include "common/model/generation_config.h"
#include "nlohmann/json.hpp"
#include "router/http/openai_request.h"
#include "tandem/v1/generate.pb.h"

namespace tandem {
class Tokenizer;
}

namespace tandem::router::http {

// {"error": {"message", "type", "param", "code"}} and its HTTP status.
struct ApiError {
  int http_status = 500;
  std::string message;
  std::string type;
  std::string param;  // empty: null
  std::string code;   // empty: null
};
// INVALID_ARGUMENT 400, UNAUTHENTICATED 401, NOT_FOUND 404,
// RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, CANCELLED
// 499 (the client left), anything else 500. `param` from the status's
// kParamPayload.
ApiError ApiErrorFromStatus(const absl::Status& s);
ApiError ApiErrorFromGrpc(const grpc::Status& s);
std::string ErrorBody(const ApiError& e);

// One generated token's logprob as OpenAI shows it.
struct TokenLogprob {
  std::string token;  // the token's own text
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  // alternatives, most likely first
};

// What one GenerateResponse adds to a choice.
struct ChoiceDelta {
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;  // "stop" or "length" on the last; empty before
  int32_t prompt_tokens = 0, completion_tokens = 0;  // set with finish_reason
};
// The token texts, text tail and finish of `resp`. `tokenizer` gives each
// chosen token's own text for logprobs (the streamed text may hold
// characters back).
ChoiceDelta DeltaOf(const v1::GenerateResponse& resp, const Tokenizer& tokenizer);

// A whole choice, accumulated from its deltas (the non-streaming answer).
struct Choice {
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::string finish_reason;
  int32_t prompt_tokens = 0, completion_tokens = 0;
  void Add(const ChoiceDelta& d);
};

// Fields every response and chunk of one request shares.
struct ResponseHeader {
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;
  std::string model;
};

nlohmann::json UsageJson(int64_t prompt_tokens, int64_t completion_tokens);
// The non-streaming answer; `logprobs` says whether choices carry them.
nlohmann::json CompletionResponse(ApiKind kind, const ResponseHeader& h, const std::vector<Choice>& choices,
                                  bool logprobs);
// One streaming chunk of choice `index` (chat: `first` adds the assistant
// role to the delta). `with_usage_null`: include_usage asked for, so every
// chunk but the last carries "usage": null.
nlohmann::json StreamChunk(ApiKind kind, const ResponseHeader& h, int index, const ChoiceDelta& d, bool logprobs,
                           bool first, bool with_usage_null, int text_offset);
// The last chunk with include_usage: no choices, the request's usage.
nlohmann::json UsageChunk(ApiKind kind, const ResponseHeader& h, int64_t prompt_tokens, int64_t completion_tokens);
// "data: <json>\n\n".
std::string SseEvent(const nlohmann::json& j);
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// GET /v1/models: one model, `name`, owned by "tandem", with vLLM's
// max_model_len and tandem's vocab_size (tandem-bench draws prompt ids
// from it), and "generation_defaults": the sampling values of the model's
// generation_config.json that a request leaving the field unset gets
// (temperature, top_p, top_k, repetition_penalty; only those the file sets,
// the same ones GetModelInfo reports as default_*; {} when none).
nlohmann::json ModelsList(const std::string& name, int64_t created, int64_t max_model_len, int64_t vocab_size,
                          const GenerationConfig& defaults);

}  // namespace tandem::router::http
