#include "router/http/openai_response.h"

#include <span>

#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem::router::http {
namespace {

using nlohmann::json;

json NullIfEmpty(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

json Bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// Completions' logprobs object over `lps`, whose texts start at `offset`.
json CompletionLogprobs(const std::vector<TokenLogprob>& lps, int offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  for (const TokenLogprob& lp : lps) {
    tokens.push_back(lp.token);
    token_logprobs.push_back(lp.logprob);
    json alts = json::object();
    for (const auto& [text, value] : lp.top) alts[text] = value;
    top.push_back(alts);
    offsets.push_back(offset);
    offset += static_cast<int>(lp.token.size());
  }
  return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top}, {"text_offset", offsets}};
}

json ChatLogprobs(const std::vector<TokenLogprob>& lps) {
  json content = json::array();
  for (const TokenLogprob& lp : lps) {
    json top = json::array();
    for (const auto& [text, value] : lp.top) top.push_back({{"token", text}, {"logprob", value}, {"bytes", Bytes(text)}});
    content.push_back({{"token", lp.token}, {"logprob", lp.logprob}, {"bytes", Bytes(lp.token)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

const char* TypeFor(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable_error";
    case 504: return "timeout_error";
    default: return "server_error";
  }
}

ApiError Make(int status, std::string message, std::string param = "") {
  ApiError e;
  e.http_status = status;
  e.message = std::move(message);
  e.type = TypeFor(status);
  e.param = std::move(param);
  return e;
}

}  // namespace

ApiError ApiErrorFromStatus(const absl::Status& s) {
  std::string param;
  if (auto p = s.GetPayload(std::string(kParamPayload)); p.has_value()) param = std::string(*p);
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: return Make(400, std::string(s.message()), param);
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied: return Make(401, std::string(s.message()));
    case absl::StatusCode::kNotFound: {
      ApiError e = Make(404, std::string(s.message()), param);
      if (param == "model") e.code = "model_not_found";
      return e;
    }
    case absl::StatusCode::kResourceExhausted: return Make(429, std::string(s.message()));
    case absl::StatusCode::kUnavailable: return Make(503, std::string(s.message()));
    case absl::StatusCode::kDeadlineExceeded: return Make(504, std::string(s.message()));
    case absl::StatusCode::kCancelled: return Make(499, std::string(s.message()));
    default: return Make(500, std::string(s.message()));
  }
}

ApiError ApiErrorFromGrpc(const grpc::Status& s) {
  return ApiErrorFromStatus(absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message()));
}

std::string ErrorBody(const ApiError& e) {
  return json{{"error",
               {{"message", e.message}, {"type", e.type}, {"param", NullIfEmpty(e.param)}, {"code", NullIfEmpty(e.code)}}}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

ChoiceDelta DeltaOf(const v1::GenerateResponse& resp, const Tokenizer& tokenizer) {
  ChoiceDelta d;
  for (const v1::GeneratedToken& t : resp.tokens()) {
    d.text += t.text();
    if (!t.has_logprob()) continue;
    TokenLogprob lp;
    const int32_t id = t.id();
    lp.token = SanitizeUtf8(tokenizer.Decode(std::span<const int32_t>(&id, 1), false));
    lp.logprob = t.logprob();
    for (const v1::TokenLogprob& alt : t.top_logprobs()) lp.top.emplace_back(alt.text(), alt.logprob());
    d.logprobs.push_back(std::move(lp));
  }
  d.text += resp.text_tail();
  switch (resp.finish_reason()) {
    case v1::FINISH_REASON_UNSPECIFIED: break;
    case v1::FINISH_REASON_LENGTH: d.finish_reason = "length"; break;
    default: d.finish_reason = "stop"; break;
  }
  if (!d.finish_reason.empty()) {
    d.prompt_tokens = resp.usage().prompt_tokens();
    d.completion_tokens = resp.usage().completion_tokens();
  }
  return d;
}

void Choice::Add(const ChoiceDelta& d) {
  text += d.text;
  logprobs.insert(logprobs.end(), d.logprobs.begin(), d.logprobs.end());
  if (!d.finish_reason.empty()) {
    finish_reason = d.finish_reason;
    prompt_tokens = d.prompt_tokens;
    completion_tokens = d.completion_tokens;
  }
}

json UsageJson(int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json CompletionResponse(ApiKind kind, const ResponseHeader& h, const std::vector<Choice>& choices, bool logprobs) {
  json out = json::array();
  int64_t prompt = 0, completion = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    const Choice& c = choices[i];
    // Every choice is one prompt: usage counts it once.
    prompt = c.prompt_tokens;
    completion += c.completion_tokens;
    json lp = logprobs ? (kind == ApiKind::kChat ? ChatLogprobs(c.logprobs) : CompletionLogprobs(c.logprobs, 0))
                       : json(nullptr);
    if (kind == ApiKind::kChat) {
      out.push_back({{"index", i},
                     {"message", {{"role", "assistant"}, {"content", c.text}}},
                     {"logprobs", lp},
                     {"finish_reason", c.finish_reason}});
    } else {
      out.push_back({{"index", i}, {"text", c.text}, {"logprobs", lp}, {"finish_reason", c.finish_reason}});
    }
  }
  return {{"id", h.id},
          {"object", kind == ApiKind::kChat ? "chat.completion" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", out},
          {"usage", UsageJson(prompt, completion)}};
}

json StreamChunk(ApiKind kind, const ResponseHeader& h, int index, const ChoiceDelta& d, bool logprobs, bool first,
                 bool with_usage_null, int text_offset) {
  json lp = logprobs ? (kind == ApiKind::kChat ? ChatLogprobs(d.logprobs) : CompletionLogprobs(d.logprobs, text_offset))
                     : json(nullptr);
  json choice;
  if (kind == ApiKind::kChat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!d.text.empty() || first) delta["content"] = d.text;
    choice = {{"index", index}, {"delta", delta}, {"logprobs", lp}, {"finish_reason", NullIfEmpty(d.finish_reason)}};
  } else {
    choice = {{"index", index}, {"text", d.text}, {"logprobs", lp}, {"finish_reason", NullIfEmpty(d.finish_reason)}};
  }
  json chunk = {{"id", h.id},
                {"object", kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
                {"created", h.created},
                {"model", h.model},
                {"choices", json::array({choice})}};
  if (with_usage_null) chunk["usage"] = nullptr;
  return chunk;
}

json UsageChunk(ApiKind kind, const ResponseHeader& h, int64_t prompt_tokens, int64_t completion_tokens) {
  return {{"id", h.id},
          {"object", kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
          {"created", h.created},
          {"model", h.model},
          {"choices", json::array()},
          {"usage", UsageJson(prompt_tokens, completion_tokens)}};
}

std::string SseEvent(const json& j) { return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }

json ModelsList(const std::string& name, int64_t created, int64_t max_model_len, int64_t vocab_size,
                const GenerationConfig& defaults) {
  json model = {{"id", name}, {"object", "model"}, {"created", created}, {"owned_by", "tandem"}, {"root", name}};
  if (max_model_len > 0) model["max_model_len"] = max_model_len;
  if (vocab_size > 0) model["vocab_size"] = vocab_size;
  json generation_defaults = json::object();
  if (defaults.temperature) generation_defaults["temperature"] = *defaults.temperature;
  if (defaults.top_p) generation_defaults["top_p"] = *defaults.top_p;
  if (defaults.top_k) generation_defaults["top_k"] = *defaults.top_k;
  if (defaults.repetition_penalty) generation_defaults["repetition_penalty"] = *defaults.repetition_penalty;
  model["generation_defaults"] = std::move(generation_defaults);
  return {{"object", "list"}, {"data", json::array({model})}};
}

}  // namespace tandem::router::http
