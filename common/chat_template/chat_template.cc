#include "common/chat_template/chat_template.h"

#include "absl/status/status.h"

namespace tandem {

absl::StatusOr<ChatTemplate> ChatTemplate::FromModelDir(const std::string& dir) {
  return absl::UnimplementedError("chat templates: renderer not built yet (" + dir + ")");
}

absl::StatusOr<ChatTemplate> ChatTemplate::FromSource(std::string source, std::string bos_token,
                                                      std::string eos_token) {
  return absl::UnimplementedError("chat templates: renderer not built yet");
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& messages, bool add_generation_prompt,
                                                 const nlohmann::json& extra_context) const {
  return absl::UnimplementedError("chat templates: renderer not built yet");
}

}  // namespace tandem
