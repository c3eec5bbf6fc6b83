// The list of registered regions a UCX-exported pool publishes in
// KvPoolDescriptor.remote_key. A pool whose per-layer arrays are not all
// adjacent in memory is registered as several regions, each with its own
// packed UCX remote key, so one descriptor field carries a list:
//
//   u32 count, then per region: u64 address, u64 length, u32 key_size,
//   key_size bytes of ucp_rkey_pack output
//
// integers little-endian. A region covers whole per-layer K or V arrays,
// so any put into one destination block lies within a single region.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem {

struct UcxRemoteRegion {
  uint64_t address = 0;
  uint64_t length = 0;
  std::string packed_key;
  bool operator==(const UcxRemoteRegion&) const = default;
};

std::string EncodeUcxRemoteRegions(const std::vector<UcxRemoteRegion>& regions);

// INVALID_ARGUMENT (naming `owner`, the exporting worker) when the bytes
// are truncated, have trailing garbage, or describe an empty region.
absl::StatusOr<std::vector<UcxRemoteRegion>> DecodeUcxRemoteRegions(std::string_view bytes,
                                                                   std::string_view owner);

// Address ranges [address, address + length) to register: the given ranges
// sorted, with adjacent or overlapping ones merged.
struct AddressRange {
  uint64_t address = 0;
  uint64_t length = 0;
  bool operator==(const AddressRange&) const = default;
};
std::vector<AddressRange> MergeAddressRanges(std::vector<AddressRange> ranges);

}  // namespace tandem
