// --help for tandem's binaries. abseil lists only the flags defined in a
// file named after the binary (tandem-router.cc, ...), so `tandem-router
// --help` printed "No flags matched". SetUpFlagsUsage makes --help and
// --helpshort list every flag defined under the binary's own source folders
// and common/ (the shared flag files: scheduler, TLS, API token, gRPC
// limits, worker options). Call once in main, before absl::ParseCommandLine.
#ifndef TANDEM_COMMON_UTIL_FLAGS_USAGE_H_
#define TANDEM_COMMON_UTIL_FLAGS_USAGE_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace tandem {

// flag_dirs: source folders relative to the repository root, e.g.
// {"router/"}; "common/" is always included.
void SetUpFlagsUsage(absl::string_view usage, std::vector<std::string> flag_dirs);

// Whether a flag defined in `file` (its __FILE__) is listed for `flag_dirs`
// (with "common/"): the file lies under one of them.
bool FlagFileMatches(absl::string_view file, const std::vector<std::string>& flag_dirs);

}  // namespace tandem

#endif  // TANDEM_COMMON_UTIL_FLAGS_USAGE_H_
