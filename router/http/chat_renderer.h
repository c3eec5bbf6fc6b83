// The chat route's prompt: a request's messages through the model's chat
// template (common/chat_template), loaded once at router start.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "router/http/openai_request.h"

namespace tandem::router::http {

struct ChatRenderer {
  // Null when the model has no usable template; chat requests then get
  // 400 with `unavailable_reason`.
  std::function<absl::StatusOr<std::string>(const OpenAiRequest&)> render;
  std::string unavailable_reason;
};

// The template of the model in `dir` (tokenizer_config.json's
// chat_template or chat_template.jinja). A model without one, or with one
// the renderer refuses (UNIMPLEMENTED, naming the construct), serves
// completions only: chat is refused with that reason, never rendered wrong.
ChatRenderer ChatRendererFromModelDir(const std::string& dir);

}  // namespace tandem::router::http
