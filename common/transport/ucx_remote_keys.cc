#include "common/transport/ucx_remote_keys.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

void PutLittleEndian(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Reads `bytes` little-endian bytes from the front of `in`; false if short.
bool TakeLittleEndian(std::string_view& in, int bytes, uint64_t* v) {
  if (in.size() < static_cast<size_t>(bytes)) return false;
  *v = 0;
  for (int i = 0; i < bytes; ++i) *v |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  in.remove_prefix(bytes);
  return true;
}

}  // namespace

std::string EncodeUcxRemoteRegions(const std::vector<UcxRemoteRegion>& regions) {
  std::string out;
  PutLittleEndian(out, regions.size(), 4);
  for (const UcxRemoteRegion& r : regions) {
    PutLittleEndian(out, r.address, 8);
    PutLittleEndian(out, r.length, 8);
    PutLittleEndian(out, r.packed_key.size(), 4);
    out += r.packed_key;
  }
  return out;
}

absl::StatusOr<std::vector<UcxRemoteRegion>> DecodeUcxRemoteRegions(std::string_view bytes,
                                                                   std::string_view owner) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("KvPoolDescriptor.remote_key of decode worker ", std::string(owner), " is malformed: ", std::string(why)));
  };
  uint64_t count = 0;
  if (!TakeLittleEndian(bytes, 4, &count)) return bad("no region count");
  std::vector<UcxRemoteRegion> regions;
  for (uint64_t i = 0; i < count; ++i) {
    UcxRemoteRegion r;
    uint64_t key_size = 0;
    if (!TakeLittleEndian(bytes, 8, &r.address) || !TakeLittleEndian(bytes, 8, &r.length) ||
        !TakeLittleEndian(bytes, 4, &key_size) || bytes.size() < key_size) {
      return bad(absl::StrCat("region ", i, " of ", count, " is truncated"));
    }
    if (r.length == 0 || key_size == 0) return bad(absl::StrCat("region ", i, " is empty"));
    r.packed_key = std::string(bytes.substr(0, key_size));
    bytes.remove_prefix(key_size);
    regions.push_back(std::move(r));
  }
  if (!bytes.empty()) return bad(absl::StrCat(bytes.size(), " trailing bytes"));
  if (regions.empty()) return bad("no regions");
  return regions;
}

std::vector<AddressRange> MergeAddressRanges(std::vector<AddressRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const AddressRange& a, const AddressRange& b) { return a.address < b.address; });
  std::vector<AddressRange> merged;
  for (const AddressRange& r : ranges) {
    if (r.length == 0) continue;
    if (!merged.empty() && r.address <= merged.back().address + merged.back().length) {
      AddressRange& last = merged.back();
      last.length = std::max(last.address + last.length, r.address + r.length) - last.address;
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

}  // namespace tandem
