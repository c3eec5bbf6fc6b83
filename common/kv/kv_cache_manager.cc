#include "common/kv/kv_cache_manager.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace tandem {

KvCacheManager::KvCacheManager(const KvLayout& layout, int32_t num_blocks)
    : layout_(layout), allocator_(num_blocks) {}

int32_t KvCacheManager::BlocksNeeded(SeqId seq, int64_t num_tokens) const {
  absl::MutexLock lock(&mu_);
  auto it = tables_.find(seq);
  const int32_t have = it == tables_.end() ? 0 : static_cast<int32_t>(it->second.blocks.size());
  return std::max(0, layout_.BlocksForTokens(num_tokens) - have);
}

absl::Status KvCacheManager::Reserve(SeqId seq, int64_t num_tokens) {
  absl::MutexLock lock(&mu_);
  std::vector<int32_t>& table = tables_[seq].blocks;
  const int32_t need = layout_.BlocksForTokens(num_tokens) - static_cast<int32_t>(table.size());
  if (need <= 0) return absl::OkStatus();
  absl::StatusOr<std::vector<int32_t>> blocks = allocator_.Allocate(need);
  if (!blocks.ok()) {
    if (table.empty()) tables_.erase(seq);
    return blocks.status();
  }
  table.insert(table.end(), blocks->begin(), blocks->end());
  return absl::OkStatus();
}

absl::Status KvCacheManager::Adopt(SeqId seq, std::vector<int32_t> blocks) {
  absl::MutexLock lock(&mu_);
  if (tables_.contains(seq)) {
    return absl::InvalidArgumentError(absl::StrCat("sequence ", seq, " already has KV blocks"));
  }
  tables_.emplace(seq, SeqBlocks{std::move(blocks), {}});
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> KvCacheManager::BlockTable(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  auto it = tables_.find(seq);
  if (it == tables_.end()) return absl::NotFoundError(absl::StrCat("no KV blocks for sequence ", seq));
  return it->second.blocks;
}

void KvCacheManager::Free(SeqId seq) {
  std::vector<int32_t> blocks;
  {
    absl::MutexLock lock(&mu_);
    auto it = tables_.find(seq);
    if (it == tables_.end()) return;
    blocks = std::move(it->second.blocks);
    tables_.erase(it);
  }
  // Last block first: the LRU evicts the earliest released first, so a
  // sequence's tail goes before its head, which more sequences share.
  std::reverse(blocks.begin(), blocks.end());
  // Tables only hold blocks this manager allocated or adopted, so a failure
  // here is a broken invariant, not a recoverable condition.
  absl::Status s = allocator_.Release(blocks);
  if (!s.ok()) std::abort();
}

bool KvCacheManager::Contains(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  return tables_.contains(seq);
}

absl::StatusOr<int32_t> KvCacheManager::MatchPrefix(SeqId seq, std::span<const int32_t> tokens,
                                                     std::string_view cache_salt) {
  if (tokens.empty()) return 0;
  // Blocks entirely before the last token: that one is always computed.
  std::vector<BlockHash> keys = HashFullBlocks(tokens.first(tokens.size() - 1), layout_.block_size, cache_salt);
  absl::MutexLock lock(&mu_);
  if (tables_.contains(seq)) {
    return absl::FailedPreconditionError(absl::StrCat("sequence ", seq, " already has KV blocks"));
  }
  std::vector<int32_t> blocks = allocator_.AcquireCached(keys);
  if (blocks.empty()) return 0;
  keys.resize(blocks.size());
  const int32_t hit = static_cast<int32_t>(blocks.size()) * layout_.block_size;
  tables_.emplace(seq, SeqBlocks{std::move(blocks), std::move(keys)});
  return hit;
}

std::vector<int32_t> KvCacheManager::AcquireCachedPrefix(std::span<const int32_t> tokens,
                                                         std::string_view cache_salt) {
  if (tokens.empty()) return {};
  const std::vector<BlockHash> keys =
      HashFullBlocks(tokens.first(tokens.size() - 1), layout_.block_size, cache_salt);
  std::vector<int32_t> blocks = allocator_.AcquireCached(keys);
  RecordPrefixLookup(static_cast<int64_t>(tokens.size()),
                     static_cast<int64_t>(blocks.size()) * layout_.block_size);
  return blocks;
}

absl::Status KvCacheManager::CommitFullBlocks(SeqId seq, std::span<const int32_t> tokens, int64_t num_computed,
                                              std::string_view cache_salt) {
  absl::MutexLock lock(&mu_);
  auto it = tables_.find(seq);
  if (it == tables_.end()) return absl::NotFoundError(absl::StrCat("no KV blocks for sequence ", seq));
  SeqBlocks& s = it->second;
  const int64_t computed = std::min<int64_t>(num_computed, static_cast<int64_t>(tokens.size()));
  const size_t full = std::min(static_cast<size_t>(computed / layout_.block_size), s.blocks.size());
  const size_t bs = static_cast<size_t>(layout_.block_size);
  while (s.keys.size() < full) {
    const size_t i = s.keys.size();
    const BlockHash parent = i == 0 ? PrefixRoot(cache_salt) : s.keys.back();
    const BlockHash key = HashBlock(parent, tokens.subspan(i * bs, bs));
    if (absl::Status c = allocator_.Commit(s.blocks[i], key); !c.ok()) return c;
    s.keys.push_back(key);
  }
  return absl::OkStatus();
}

void KvCacheManager::RecordPrefixLookup(int64_t queried, int64_t hit) {
  prefix_queried_tokens_.fetch_add(queried, std::memory_order_relaxed);
  prefix_hit_tokens_.fetch_add(hit, std::memory_order_relaxed);
}

size_t KvCacheManager::num_sequences() const {
  absl::MutexLock lock(&mu_);
  return tables_.size();
}

}  // namespace tandem
