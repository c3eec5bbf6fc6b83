#include "router/http/openai_request.h"

#include <cmath>
#include <limits>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace tandem::router::http {
namespace {

using nlohmann::json;

// Null counts as absent, as in OpenAI's API.
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

absl::Status WrongType(const char* name, const char* what) {
  return ParamError(name, absl::StrCat("'", name, "' must be ", what));
}

absl::StatusOr<std::optional<double>> Number(const json& body, const char* name) {
  const json* f = Field(body, name);
  if (f == nullptr) return std::optional<double>();
  if (!f->is_number()) return WrongType(name, "a number");
  const double v = f->get<double>();
  if (!std::isfinite(v)) return WrongType(name, "a finite number");
  return std::optional<double>(v);
}

absl::StatusOr<std::optional<int64_t>> Integer(const json& body, const char* name) {
  const json* f = Field(body, name);
  if (f == nullptr) return std::optional<int64_t>();
  if (!f->is_number_integer()) return WrongType(name, "an integer");
  return std::optional<int64_t>(f->get<int64_t>());
}

absl::StatusOr<std::optional<bool>> Bool(const json& body, const char* name) {
  const json* f = Field(body, name);
  if (f == nullptr) return std::optional<bool>();
  if (!f->is_boolean()) return WrongType(name, "a boolean");
  return std::optional<bool>(f->get<bool>());
}

// An int32 field in [lo, hi].
absl::StatusOr<std::optional<int32_t>> Bounded(const json& body, const char* name, int64_t lo, int64_t hi) {
  absl::StatusOr<std::optional<int64_t>> v = Integer(body, name);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::optional<int32_t>();
  if (**v < lo || **v > hi) return ParamError(name, absl::StrCat("'", name, "' is ", **v, "; it must be in [", lo, ", ", hi, "]"));
  return std::optional<int32_t>(static_cast<int32_t>(**v));
}

#define TANDEM_FIELD(var, expr)     \
  auto var##_or = (expr);           \
  if (!var##_or.ok()) return var##_or.status(); \
  const auto var = *var##_or

// `prompt`: a string, an array of token ids, or a one-element array of
// either (what the SDKs send for a single prompt).
absl::Status ReadPrompt(const json& body, v1::GenerateRequest& g) {
  const json* p = Field(body, "prompt");
  if (p == nullptr) return ParamError("prompt", "'prompt' is required");
  const json* one = p;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) one = &(*p)[0];
  if (one->is_string()) {
    g.set_text(one->get<std::string>());
    return absl::OkStatus();
  }
  if (one->is_array()) {
    if (one->empty()) return ParamError("prompt", "'prompt' is empty");
    for (const json& id : *one) {
      if (id.is_string() || id.is_array()) {
        return ParamError("prompt", "several prompts in one request are not supported; send one request per prompt");
      }
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
        return ParamError("prompt", "'prompt' token ids must be non-negative integers");
      }
      g.mutable_token_ids()->add_ids(static_cast<int32_t>(id.get<int64_t>()));
    }
    return absl::OkStatus();
  }
  return WrongType("prompt", "a string or an array of token ids");
}

absl::Status ReadMessages(const json& body, OpenAiRequest& r) {
  const json* m = Field(body, "messages");
  if (m == nullptr) return ParamError("messages", "'messages' is required");
  if (!m->is_array() || m->empty()) return ParamError("messages", "'messages' must be a non-empty array");
  for (const json& msg : *m) {
    if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string()) {
      return ParamError("messages", "every message must be an object with a string 'role'");
    }
    auto content = msg.find("content");
    if (content != msg.end() && !content->is_null() && !content->is_string() && !content->is_array()) {
      return ParamError("messages", "a message's 'content' must be a string or an array of parts");
    }
  }
  r.messages = *m;
  return absl::OkStatus();
}

absl::Status ReadStop(const json& body, v1::StoppingCriteria& s) {
  const json* stop = Field(body, "stop");
  if (stop == nullptr) return absl::OkStatus();
  if (stop->is_string()) {
    s.add_stop(stop->get<std::string>());
    return absl::OkStatus();
  }
  if (!stop->is_array()) return WrongType("stop", "a string or an array of strings");
  for (const json& one : *stop) {
    if (!one.is_string()) return WrongType("stop", "a string or an array of strings");
    s.add_stop(one.get<std::string>());
  }
  return absl::OkStatus();
}

// Fields a client may send that would change the answer in ways tandem
// does not implement: refused rather than silently ignored.
absl::Status RefuseUnsupported(ApiKind kind, const json& body) {
  if (const json* echo = Field(body, "echo"); echo != nullptr && echo->is_boolean() && echo->get<bool>()) {
    return ParamError("echo", "'echo' is not supported");
  }
  if (Field(body, "suffix") != nullptr) return ParamError("suffix", "'suffix' is not supported");
  if (const json* tools = Field(body, "tools"); tools != nullptr && !(tools->is_array() && tools->empty())) {
    return ParamError("tools", "'tools' (function calling) is not supported");
  }
  if (const json* lb = Field(body, "logit_bias"); lb != nullptr && !(lb->is_object() && lb->empty())) {
    return ParamError("logit_bias", "'logit_bias' is not supported");
  }
  if (const json* rf = Field(body, "response_format"); rf != nullptr) {
    if (!rf->is_object() || rf->value("type", "") != "text") {
      return ParamError("response_format", "only 'response_format' {\"type\": \"text\"} is supported");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ParamError(std::string_view param, std::string_view message) {
  absl::Status s = absl::InvalidArgumentError(std::string(message));
  s.SetPayload(std::string(kParamPayload), absl::Cord(std::string(param)));
  return s;
}

absl::StatusOr<OpenAiRequest> ParseOpenAiRequest(ApiKind kind, std::string_view text) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return absl::InvalidArgumentError("the request body is not valid JSON");
  if (!body.is_object()) return absl::InvalidArgumentError("the request body must be a JSON object");
  if (absl::Status s = RefuseUnsupported(kind, body); !s.ok()) return s;
  OpenAiRequest r;
  r.kind = kind;
  v1::GenerateRequest& g = r.generate;
  v1::SamplingParameters& sp = *g.mutable_sampling();
  v1::StoppingCriteria& st = *g.mutable_stopping();

  if (const json* model = Field(body, "model"); model != nullptr) {
    if (!model->is_string()) return WrongType("model", "a string");
    r.model = model->get<std::string>();
  }
  if (kind == ApiKind::kCompletion) {
    if (absl::Status s = ReadPrompt(body, g); !s.ok()) return s;
  } else {
    if (absl::Status s = ReadMessages(body, r); !s.ok()) return s;
    TANDEM_FIELD(add_generation_prompt, Bool(body, "add_generation_prompt"));
    r.add_generation_prompt = add_generation_prompt.value_or(true);
    if (const json* kw = Field(body, "chat_template_kwargs"); kw != nullptr) {
      if (!kw->is_object()) return WrongType("chat_template_kwargs", "an object");
      r.chat_template_kwargs = *kw;
    }
  }

  TANDEM_FIELD(stream, Bool(body, "stream"));
  r.stream = stream.value_or(false);
  if (const json* so = Field(body, "stream_options"); so != nullptr) {
    if (!r.stream) return ParamError("stream_options", "'stream_options' is only allowed with 'stream': true");
    if (!so->is_object()) return WrongType("stream_options", "an object");
    TANDEM_FIELD(include_usage, Bool(*so, "include_usage"));
    r.include_usage = include_usage.value_or(false);
  }
  TANDEM_FIELD(n, Bounded(body, "n", 1, kMaxChoices));
  r.n = n.value_or(1);
  TANDEM_FIELD(best_of, Integer(body, "best_of"));
  if (best_of.has_value() && *best_of != r.n) {
    return ParamError("best_of", "'best_of' other than 'n' is not supported");
  }

  // Lengths. Completions default to 16 tokens (OpenAI's default); chat to
  // the rest of the context (the router caps max_new_tokens there).
  TANDEM_FIELD(max_tokens, Bounded(body, "max_tokens", 1, std::numeric_limits<int32_t>::max()));
  TANDEM_FIELD(max_completion_tokens,
               Bounded(body, "max_completion_tokens", 1, std::numeric_limits<int32_t>::max()));
  if (max_completion_tokens.has_value()) {
    st.set_max_new_tokens(*max_completion_tokens);
  } else if (max_tokens.has_value()) {
    st.set_max_new_tokens(*max_tokens);
  } else {
    st.set_max_new_tokens(kind == ApiKind::kCompletion ? 16 : std::numeric_limits<int32_t>::max());
  }
  TANDEM_FIELD(min_tokens, Bounded(body, "min_tokens", 0, std::numeric_limits<int32_t>::max()));
  if (min_tokens.has_value()) st.set_min_new_tokens(*min_tokens);
  if (absl::Status s = ReadStop(body, st); !s.ok()) return s;
  if (const json* ids = Field(body, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return WrongType("stop_token_ids", "an array of token ids");
    for (const json& id : *ids) {
      if (!id.is_number_integer()) return WrongType("stop_token_ids", "an array of token ids");
      st.add_stop_token_ids(id.get<int32_t>());
    }
  }
  TANDEM_FIELD(ignore_eos, Bool(body, "ignore_eos"));
  st.set_ignore_eos(ignore_eos.value_or(false));
  TANDEM_FIELD(include_stop, Bool(body, "include_stop_str_in_output"));
  st.set_include_stop_str_in_output(include_stop.value_or(false));

  // Sampling: OpenAI's defaults (temperature 1, top_p 1) unless set.
  TANDEM_FIELD(temperature, Number(body, "temperature"));
  if (temperature.has_value()) sp.set_temperature(static_cast<float>(*temperature));
  TANDEM_FIELD(top_p, Number(body, "top_p"));
  if (top_p.has_value()) sp.set_top_p(static_cast<float>(*top_p));
  TANDEM_FIELD(top_k, Integer(body, "top_k"));
  if (top_k.has_value()) sp.set_top_k(static_cast<int32_t>(std::clamp<int64_t>(*top_k, -1, 1 << 30)));
  TANDEM_FIELD(min_p, Number(body, "min_p"));
  if (min_p.has_value()) sp.set_min_p(static_cast<float>(*min_p));
  TANDEM_FIELD(presence, Number(body, "presence_penalty"));
  if (presence.has_value()) sp.set_presence_penalty(static_cast<float>(*presence));
  TANDEM_FIELD(frequency, Number(body, "frequency_penalty"));
  if (frequency.has_value()) sp.set_frequency_penalty(static_cast<float>(*frequency));
  TANDEM_FIELD(repetition, Number(body, "repetition_penalty"));
  if (repetition.has_value()) sp.set_repetition_penalty(static_cast<float>(*repetition));
  if (const json* seed = Field(body, "seed"); seed != nullptr) {
    if (!seed->is_number_integer()) return WrongType("seed", "an integer");
    sp.set_seed(seed->is_number_unsigned() ? seed->get<uint64_t>() : static_cast<uint64_t>(seed->get<int64_t>()));
  }

  // Logprobs: completions' `logprobs` is the number of alternatives; chat
  // has `logprobs: bool` and `top_logprobs`.
  if (kind == ApiKind::kCompletion) {
    TANDEM_FIELD(logprobs, Bounded(body, "logprobs", 0, kMaxTopLogprobs));
    r.logprobs = logprobs.has_value();
    r.top_logprobs = logprobs.value_or(0);
  } else {
    TANDEM_FIELD(logprobs, Bool(body, "logprobs"));
    TANDEM_FIELD(top_logprobs, Bounded(body, "top_logprobs", 0, kMaxTopLogprobs));
    r.logprobs = logprobs.value_or(false);
    if (top_logprobs.has_value() && !r.logprobs) {
      return ParamError("top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
    r.top_logprobs = top_logprobs.value_or(0);
  }
  if (r.logprobs) g.set_logprobs(r.top_logprobs);

  // OpenAI's servers do not return special tokens' text (vLLM's default).
  TANDEM_FIELD(skip_special, Bool(body, "skip_special_tokens"));
  g.set_skip_special_tokens(skip_special.value_or(true));
  // vLLM's cache_salt: only requests with the same salt share cached KV.
  if (const json* salt = Field(body, "cache_salt"); salt != nullptr) {
    if (!salt->is_string()) return WrongType("cache_salt", "a string");
    g.set_cache_salt(salt->get<std::string>());
  }
  TANDEM_FIELD(priority, Integer(body, "priority"));
  if (priority.has_value()) g.set_priority(static_cast<int32_t>(std::clamp<int64_t>(*priority, INT32_MIN, INT32_MAX)));
  return r;
}

#undef TANDEM_FIELD

}  // namespace tandem::router::http
