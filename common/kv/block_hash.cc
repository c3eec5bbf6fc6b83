#include "common/kv/block_hash.h"

#include <openssl/sha.h>

#include <cstring>

#include "absl/strings/str_format.h"

namespace tandem {
namespace {

// Fixed byte order, so keys do not depend on the host's endianness.
void AppendU64(std::vector<unsigned char>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<unsigned char>(v >> (8 * i)));
}

BlockHash Digest(const std::vector<unsigned char>& bytes) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(bytes.data(), bytes.size(), md);
  BlockHash h;
  for (int i = 0; i < 8; ++i) {
    h.hi = (h.hi << 8) | md[i];
    h.lo = (h.lo << 8) | md[8 + i];
  }
  return h;
}

}  // namespace

std::string BlockHash::ToString() const { return absl::StrFormat("%016x%016x", hi, lo); }

BlockHash PrefixRoot(std::string_view cache_salt) {
  // A domain tag so that a root can never equal a block key.
  static constexpr std::string_view kTag = "tandem/kv-prefix-root/v1";
  std::vector<unsigned char> bytes(kTag.begin(), kTag.end());
  AppendU64(bytes, cache_salt.size());
  bytes.insert(bytes.end(), cache_salt.begin(), cache_salt.end());
  return Digest(bytes);
}

BlockHash HashBlock(const BlockHash& parent, std::span<const int32_t> tokens) {
  std::vector<unsigned char> bytes;
  bytes.reserve(1 + 16 + 8 + 4 * tokens.size());
  bytes.push_back('B');
  AppendU64(bytes, parent.hi);
  AppendU64(bytes, parent.lo);
  AppendU64(bytes, tokens.size());
  for (int32_t t : tokens) {
    const uint32_t u = static_cast<uint32_t>(t);
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<unsigned char>(u >> (8 * i)));
  }
  return Digest(bytes);
}

std::vector<BlockHash> HashFullBlocks(std::span<const int32_t> tokens, int32_t block_size,
                                      std::string_view cache_salt) {
  std::vector<BlockHash> out;
  if (block_size <= 0) return out;
  out.reserve(tokens.size() / block_size);
  BlockHash parent = PrefixRoot(cache_salt);
  for (size_t start = 0; start + block_size <= tokens.size(); start += block_size) {
    parent = HashBlock(parent, tokens.subspan(start, block_size));
    out.push_back(parent);
  }
  return out;
}

}  // namespace tandem
