// DecodeUcxRemoteRegions on a UCX pool descriptor's remote key as a prefill
// worker receives it; whatever decodes must re-encode to the same bytes.
#include <cstdlib>
#include <string_view>

#include "common/transport/ucx_remote_keys.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::vector<tandem::UcxRemoteRegion>> regions = tandem::DecodeUcxRemoteRegions(bytes, "d0");
  if (!regions.ok()) return 0;
  for (const tandem::UcxRemoteRegion& r : *regions) {
    if (r.length == 0 || r.packed_key.empty()) std::abort();
  }
  if (tandem::EncodeUcxRemoteRegions(*regions) != bytes) std::abort();
  return 0;
}
