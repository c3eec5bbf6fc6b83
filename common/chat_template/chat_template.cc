#include "common/chat_template/chat_template.h"

#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/chat_template/jinja_ast.h"
#include "common/chat_template/jinja_interpreter.h"
#include "common/chat_template/jinja_parser.h"
#include "common/util/read_file.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// tokenizer_config.json spells special tokens as a string or as an
// AddedToken object {"content": ...}; null or absent means none.
std::string TokenText(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

absl::Status WithSource(const absl::Status& status, const std::string& source) {
  return absl::Status(status.code(), absl::StrCat(source, ": ", status.message()));
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(const std::string& dir) {
  const std::string config_path = dir + "/tokenizer_config.json";
  nlohmann::json config = nlohmann::json::object();
  if (std::filesystem::exists(config_path)) {
    TANDEM_ASSIGN_OR_RETURN(std::string text, ReadWholeFile(config_path));
    config = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": not a JSON object"));
    }
  }
  std::string source;
  std::string origin;
  // Newer checkpoints keep the template in its own file.
  const std::string jinja_path = dir + "/chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    TANDEM_ASSIGN_OR_RETURN(source, ReadWholeFile(jinja_path));
    origin = jinja_path;
  } else if (auto it = config.find("chat_template"); it != config.end() && !it->is_null()) {
    origin = config_path + " chat_template";
    if (it->is_string()) {
      source = it->get<std::string>();
    } else if (it->is_array()) {
      // A list of named templates ({name, template}); chat uses "default".
      std::string names;
      for (const auto& entry : *it) {
        if (!entry.is_object() || !entry.contains("name") || !entry.contains("template")) continue;
        if (entry["name"] == "default" && entry["template"].is_string()) {
          source = entry["template"].get<std::string>();
          origin += " \"default\"";
        }
        absl::StrAppend(&names, names.empty() ? "" : ", ", entry["name"].dump());
      }
      if (source.empty()) {
        return absl::NotFoundError(absl::StrCat(config_path, ": chat_template has no \"default\" entry (has ", names, ")"));
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": chat_template is neither a string nor a list"));
    }
  } else {
    return absl::NotFoundError(absl::StrCat(dir, " has no chat template (no chat_template in tokenizer_config.json)"));
  }
  absl::StatusOr<ChatTemplate> result =
      FromSource(std::move(source), TokenText(config, "bos_token"), TokenText(config, "eos_token"));
  if (!result.ok()) return WithSource(result.status(), origin);
  return result;
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(std::string source, std::string bos_token,
                                                      std::string eos_token) {
  absl::StatusOr<std::unique_ptr<jinja::Template>> parsed = jinja::Parse(source);
  if (!parsed.ok()) return WithSource(parsed.status(), "chat template");
  ChatTemplate result;
  result.source_ = std::move(source);
  result.bos_token_ = std::move(bos_token);
  result.eos_token_ = std::move(eos_token);
  result.parsed_ = std::shared_ptr<const jinja::Template>(std::move(*parsed));
  return result;
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& messages, bool add_generation_prompt,
                                                 const nlohmann::json& extra_context) const {
  return RenderJson(messages, add_generation_prompt, extra_context);
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                                 const nlohmann::ordered_json& extra_context) const {
  return RenderJson(messages, add_generation_prompt, extra_context);
}

template <typename Json>
absl::StatusOr<std::string> ChatTemplate::RenderJson(const Json& messages, bool add_generation_prompt,
                                                     const Json& extra_context) const {
  if (!messages.is_array()) return absl::InvalidArgumentError("messages must be an array");
  if (!extra_context.is_object()) return absl::InvalidArgumentError("chat template context must be an object");
  // As transformers' apply_chat_template: the special tokens, then the
  // caller's kwargs (which may override them), then messages and the flag.
  jinja::Object globals;
  globals.Set("bos_token", jinja::Value::String(bos_token_));
  globals.Set("eos_token", jinja::Value::String(eos_token_));
  for (auto it = extra_context.begin(); it != extra_context.end(); ++it) {
    globals.Set(it.key(), jinja::Value::FromJson(it.value()));
  }
  globals.Set("messages", jinja::Value::FromJson(messages));
  globals.Set("add_generation_prompt", jinja::Value::Bool(add_generation_prompt));
  absl::StatusOr<std::string> text = jinja::Render(*parsed_, globals);
  if (!text.ok()) return WithSource(text.status(), "chat template");
  return text;
}

}  // namespace tandem
