// Content keys of full KV blocks: the identity prefix caching and
// cache-aware routing agree on. A block's key is a hash chain over
// everything that determines its KV: the keys of all blocks before it (as
// the parent's key), its own token ids, and a cache salt that keeps
// tenants apart (a prefix hit is visible through TTFT, so two tenants must
// never share one).
//
// The hash is SHA-256 truncated to 128 bits, stable across processes and
// builds: the router computes the same keys from the prompt that workers
// compute from their blocks. A cryptographic hash because prompts are
// chosen by clients; a colliding key would serve one client's KV to
// another (vLLM moved to SHA-256 for the same reason).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

struct BlockHash {
  uint64_t hi = 0;
  uint64_t lo = 0;

  friend bool operator==(const BlockHash& a, const BlockHash& b) { return a.hi == b.hi && a.lo == b.lo; }
  friend bool operator!=(const BlockHash& a, const BlockHash& b) { return !(a == b); }
  template <typename H>
  friend H AbslHashValue(H h, const BlockHash& b) {
    return H::combine(std::move(h), b.hi, b.lo);
  }
  // 32 hex digits, for logs and tests.
  std::string ToString() const;
};

// The key of the empty prefix under `cache_salt` (empty: no salt). Every
// chain starts here, so equal tokens under different salts never share a
// key.
BlockHash PrefixRoot(std::string_view cache_salt);

// The key of a block holding `tokens` after the block keyed `parent`.
BlockHash HashBlock(const BlockHash& parent, std::span<const int32_t> tokens);

// Keys of every full block of `tokens` (a trailing partial block has none:
// it is still being written and is never shared).
std::vector<BlockHash> HashFullBlocks(std::span<const int32_t> tokens, int32_t block_size,
                                      std::string_view cache_salt);

}  // namespace tandem
