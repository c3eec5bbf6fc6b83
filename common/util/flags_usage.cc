#include "common/util/flags_usage.h"

#include <utility>

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace tandem {

bool FlagFileMatches(absl::string_view file, const std::vector<std::string>& flag_dirs) {
  auto under = [file](absl::string_view dir) {
    // __FILE__ is absolute or relative to the repository root, depending on
    // how the compiler was given the source.
    return absl::StartsWith(file, dir) || absl::StrContains(file, absl::StrCat("/", dir));
  };
  if (under("common/")) return true;
  for (const std::string& dir : flag_dirs) {
    if (under(dir)) return true;
  }
  return false;
}

void SetUpFlagsUsage(absl::string_view usage, std::vector<std::string> flag_dirs) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [flag_dirs](absl::string_view file) { return FlagFileMatches(file, flag_dirs); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(std::move(config));
}

}  // namespace tandem
