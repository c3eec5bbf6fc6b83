// ChatTemplate: a model's chat template (tokenizer_config.json's
// `chat_template`, Jinja) rendered over an OpenAI `messages` array, the way
// transformers' apply_chat_template renders it (an ImmutableSandboxedEnvironment
// with trim_blocks and lstrip_blocks). The template is parsed once at load;
// Render is const and safe to call from many threads at once.
#ifndef TANDEM_COMMON_CHAT_TEMPLATE_CHAT_TEMPLATE_H_
#define TANDEM_COMMON_CHAT_TEMPLATE_CHAT_TEMPLATE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tandem {

namespace jinja {
struct Template;
}  // namespace jinja

class ChatTemplate {
 public:
  // tokenizer_config.json's chat_template (a string, or a list of {name, template}: take "default") and its
  // bos_token/eos_token (strings or {content: ...} objects). NOT_FOUND when the model has none;
  // UNIMPLEMENTED naming the construct (and the template) when the renderer cannot do it — refused at load, never
  // rendered wrong.
  static absl::StatusOr<ChatTemplate> FromModelDir(const std::string& dir);
  static absl::StatusOr<ChatTemplate> FromSource(std::string source, std::string bos_token, std::string eos_token);
  // messages: the OpenAI `messages` array; extra_context: e.g. {"tools": [...]} or template kwargs.
  absl::StatusOr<std::string> Render(const nlohmann::json& messages, bool add_generation_prompt,
                                     const nlohmann::json& extra_context = nlohmann::json::object()) const;
  // The same with the request's key order kept (nlohmann::json sorts object
  // keys, so `tools | tojson` would list them alphabetically where
  // transformers keeps the client's order).
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                     const nlohmann::ordered_json& extra_context) const;

  const std::string& source() const { return source_; }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }

 private:
  ChatTemplate() = default;
  template <typename Json>
  absl::StatusOr<std::string> RenderJson(const Json& messages, bool add_generation_prompt,
                                         const Json& extra_context) const;

  std::string source_;
  std::string bos_token_;
  std::string eos_token_;
  // Immutable after load; shared so ChatTemplate copies cheaply.
  std::shared_ptr<const jinja::Template> parsed_;
};

}  // namespace tandem

#endif  // TANDEM_COMMON_CHAT_TEMPLATE_CHAT_TEMPLATE_H_
