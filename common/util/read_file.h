// A whole file as a string, with the errors every loader reports the same
// way: NOT_FOUND "<path>: cannot open", DATA_LOSS "<path>: read error".
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tandem {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

}  // namespace tandem
