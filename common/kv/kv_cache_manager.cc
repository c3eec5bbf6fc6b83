#include "common/kv/kv_cache_manager.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace tandem {

KvCacheManager::KvCacheManager(const KvLayout& layout, int32_t num_blocks)
    : layout_(layout), allocator_(num_blocks) {}

int32_t KvCacheManager::BlocksNeeded(SeqId seq, int64_t num_tokens) const {
  absl::MutexLock lock(&mu_);
  auto it = tables_.find(seq);
  const int32_t have = it == tables_.end() ? 0 : static_cast<int32_t>(it->second.size());
  return std::max(0, layout_.BlocksForTokens(num_tokens) - have);
}

absl::Status KvCacheManager::Reserve(SeqId seq, int64_t num_tokens) {
  absl::MutexLock lock(&mu_);
  std::vector<int32_t>& table = tables_[seq];
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
  tables_.emplace(seq, std::move(blocks));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int32_t>> KvCacheManager::BlockTable(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  auto it = tables_.find(seq);
  if (it == tables_.end()) return absl::NotFoundError(absl::StrCat("no KV blocks for sequence ", seq));
  return it->second;
}

void KvCacheManager::Free(SeqId seq) {
  std::vector<int32_t> blocks;
  {
    absl::MutexLock lock(&mu_);
    auto it = tables_.find(seq);
    if (it == tables_.end()) return;
    blocks = std::move(it->second);
    tables_.erase(it);
  }
  // Tables only hold blocks this manager allocated or adopted, so a failure
  // here is a broken invariant, not a recoverable condition.
  absl::Status s = allocator_.Release(blocks);
  if (!s.ok()) std::abort();
}

bool KvCacheManager::Contains(SeqId seq) const {
  absl::MutexLock lock(&mu_);
  return tables_.contains(seq);
}

size_t KvCacheManager::num_sequences() const {
  absl::MutexLock lock(&mu_);
  return tables_.size();
}

}  // namespace tandem
