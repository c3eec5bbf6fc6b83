// Memory-mapped reading of one .safetensors file: an 8-byte little-endian
// header length, a JSON header naming each tensor's dtype, shape and byte
// range, then the data. Every field is checked, so a truncated or corrupt
// file fails with its name and the problem instead of reading garbage.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/model/weight_store.h"

namespace tandem {

struct SafetensorsFile {
  std::string path;
  std::map<std::string, HostTensor> tensors;  // views into the mapping
  std::map<std::string, std::string> metadata;
};

// The mapping stays alive as long as any HostTensor from it does.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

}  // namespace tandem
