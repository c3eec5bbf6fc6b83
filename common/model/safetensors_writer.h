// Writing .safetensors files (the default model writer, tests).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/model/weight_store.h"

namespace tandem {

// Writes `tensors` in order, with `metadata` as __metadata__, to a
// temporary file renamed to `path`, so readers never see a partial file.
// The header is padded with spaces to a multiple of 8 bytes, as the
// safetensors library does.
absl::Status WriteSafetensors(const std::string& path, const std::vector<HostTensor>& tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace tandem
