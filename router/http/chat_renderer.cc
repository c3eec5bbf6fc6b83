#include "router/http/chat_renderer.h"

#include "absl/strings/str_cat.h"
#include "common/chat_template/chat_template.h"

namespace tandem::router::http {

ChatRenderer ChatRendererFromModelDir(const std::string& dir) {
  ChatRenderer out;
  absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(dir);
  if (!t.ok()) {
    out.unavailable_reason = t.status().code() == absl::StatusCode::kNotFound
                                 ? "the model has no chat template; use /v1/completions"
                                 : absl::StrCat("the model's chat template cannot be rendered (", t.status().message(),
                                                "); use /v1/completions");
    return out;
  }
  out.render = [t = *std::move(t)](const OpenAiRequest& r) -> absl::StatusOr<std::string> {
    return t.Render(r.messages, r.add_generation_prompt, r.chat_template_kwargs);
  };
  return out;
}

}  // namespace tandem::router::http
