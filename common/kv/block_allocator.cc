#include "common/kv/block_allocator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem {

BlockAllocator::BlockAllocator(int32_t num_blocks)
    : num_total_(num_blocks),
      ref_count_(num_blocks, 0),
      cached_(num_blocks, false),
      key_(num_blocks),
      lru_prev_(num_blocks, kNone),
      lru_next_(num_blocks, kNone) {
  free_.reserve(num_blocks);
  // Pushed in reverse so the first allocations get blocks 0, 1, 2, ...
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

void BlockAllocator::LruPushBack(int32_t b) {
  lru_prev_[b] = lru_tail_;
  lru_next_[b] = kNone;
  if (lru_tail_ != kNone) {
    lru_next_[lru_tail_] = b;
  } else {
    lru_head_ = b;
  }
  lru_tail_ = b;
  ++lru_size_;
}

void BlockAllocator::LruUnlink(int32_t b) {
  const int32_t prev = lru_prev_[b], next = lru_next_[b];
  if (prev != kNone) {
    lru_next_[prev] = next;
  } else {
    lru_head_ = next;
  }
  if (next != kNone) {
    lru_prev_[next] = prev;
  } else {
    lru_tail_ = prev;
  }
  lru_prev_[b] = lru_next_[b] = kNone;
  --lru_size_;
}

int32_t BlockAllocator::EvictOne() {
  const int32_t b = lru_head_;
  LruUnlink(b);
  by_key_.erase(key_[b]);
  cached_[b] = false;
  LogEvent(key_[b], /*stored=*/false);
  ++evictions_;
  return b;
}

absl::StatusOr<std::vector<int32_t>> BlockAllocator::Allocate(int32_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cannot allocate ", n, " KV blocks"));
  absl::MutexLock lock(&mu_);
  const int32_t available = static_cast<int32_t>(free_.size()) + lru_size_;
  if (n > available) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: need ", n, " blocks, ", available, " of ",
                                                     num_total_, " free"));
  }
  std::vector<int32_t> out;
  out.reserve(n);
  while (static_cast<int32_t>(out.size()) < n && !free_.empty()) {
    out.push_back(free_.back());
    free_.pop_back();
  }
  while (static_cast<int32_t>(out.size()) < n) out.push_back(EvictOne());
  for (int32_t b : out) ref_count_[b] = 1;
  return out;
}

absl::Status BlockAllocator::AddRef(int32_t block) {
  absl::MutexLock lock(&mu_);
  if (block < 0 || block >= num_total_ || ref_count_[block] == 0) {
    return absl::FailedPreconditionError(absl::StrCat("AddRef on unallocated KV block ", block));
  }
  ++ref_count_[block];
  return absl::OkStatus();
}

absl::Status BlockAllocator::Release(std::span<const int32_t> blocks) {
  absl::MutexLock lock(&mu_);
  // Validate first so a bad call changes nothing (a block listed twice
  // needs two references).
  absl::flat_hash_map<int32_t, int32_t> releases;
  for (int32_t b : blocks) {
    if (b < 0 || b >= num_total_ || ref_count_[b] < ++releases[b]) {
      return absl::FailedPreconditionError(absl::StrCat("release of free or invalid KV block ", b));
    }
  }
  for (int32_t b : blocks) {
    if (--ref_count_[b] > 0) continue;
    if (cached_[b]) {
      LruPushBack(b);
    } else {
      free_.push_back(b);
    }
  }
  return absl::OkStatus();
}

absl::Status BlockAllocator::Commit(int32_t block, const BlockHash& key) {
  absl::MutexLock lock(&mu_);
  if (block < 0 || block >= num_total_ || ref_count_[block] == 0) {
    return absl::FailedPreconditionError(absl::StrCat("commit of unheld KV block ", block));
  }
  if (cached_[block]) {
    if (key_[block] == key) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("KV block ", block, " is cached as ", key_[block].ToString(),
                                                      ", not ", key.ToString()));
  }
  if (!by_key_.try_emplace(key, block).second) return absl::OkStatus();  // another block has it
  cached_[block] = true;
  key_[block] = key;
  LogEvent(key, /*stored=*/true);
  return absl::OkStatus();
}

std::vector<int32_t> BlockAllocator::AcquireCached(std::span<const BlockHash> keys) {
  absl::MutexLock lock(&mu_);
  std::vector<int32_t> out;
  for (const BlockHash& k : keys) {
    auto it = by_key_.find(k);
    if (it == by_key_.end()) break;
    const int32_t b = it->second;
    if (ref_count_[b]++ == 0) LruUnlink(b);
    out.push_back(b);
  }
  return out;
}

void BlockAllocator::LogEvent(const BlockHash& key, bool stored) {
  events_.emplace_back(key, stored);
  // Nobody drains (no router): keep the log bounded by the pool size. After
  // netting, a key is either cached now or was cached when the batch began,
  // so at most two entries per block remain.
  if (events_.size() > 2 * static_cast<size_t>(num_total_) + 1024) CompactEvents(/*drop_unseen=*/true);
}

void BlockAllocator::CompactEvents(bool drop_unseen) {
  struct Net {
    size_t first = 0;  // index of the key's first event
    bool first_stored = false;
    bool last_stored = false;
  };
  absl::flat_hash_map<BlockHash, Net> net;
  for (size_t i = 0; i < events_.size(); ++i) {
    const auto& [key, stored] = events_[i];
    auto [it, inserted] = net.try_emplace(key, Net{i, stored, stored});
    if (!inserted) it->second.last_stored = stored;
  }
  std::vector<std::pair<BlockHash, bool>> out;
  out.reserve(net.size());
  for (size_t i = 0; i < events_.size(); ++i) {
    const Net& n = net[events_[i].first];
    if (n.first != i) continue;
    // Stored, then evicted again: nobody can have seen it once nobody
    // drained for this long (see kv_cache_events.h).
    if (drop_unseen && n.first_stored && !n.last_stored) continue;
    out.emplace_back(events_[i].first, n.last_stored);
  }
  events_ = std::move(out);
}

KvCacheEvents BlockAllocator::DrainCacheEvents() {
  absl::MutexLock lock(&mu_);
  CompactEvents(/*drop_unseen=*/false);
  KvCacheEvents out;
  for (const auto& [key, stored] : events_) (stored ? out.stored : out.removed).push_back(key);
  events_.clear();
  return out;
}

std::vector<BlockHash> BlockAllocator::CachedBlockHashes() const {
  absl::MutexLock lock(&mu_);
  std::vector<BlockHash> out;
  out.reserve(by_key_.size());
  for (const auto& [key, block] : by_key_) out.push_back(key);
  return out;
}

int32_t BlockAllocator::RefCount(int32_t block) const {
  absl::MutexLock lock(&mu_);
  if (block < 0 || block >= num_total_) return 0;
  return ref_count_[block];
}

int32_t BlockAllocator::num_free() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(free_.size()) + lru_size_;
}

int32_t BlockAllocator::num_cached() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(by_key_.size());
}

int32_t BlockAllocator::num_evictable() const {
  absl::MutexLock lock(&mu_);
  return lru_size_;
}

int64_t BlockAllocator::num_evictions() const {
  absl::MutexLock lock(&mu_);
  return evictions_;
}

}  // namespace tandem
