// The KV block pool of one process: hands out fixed-size blocks by index
// with reference counts, and keeps full blocks whose content key
// (BlockHash) is known as a prefix cache after their last owner lets go
// (vLLM v1's BlockPool). A cached block with no owner is evictable: it is
// reused, least recently released first, only when an allocation finds the
// free list short.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/kv/block_hash.h"
#include "common/kv/kv_cache_events.h"

namespace tandem {

// Thread-safe: gRPC handler threads reserve blocks for incoming transfers
// while the batching loop frees finished sequences' blocks and the
// registration thread drains cache events.
//
// Every block is in exactly one state:
//  - referenced: reference count > 0 (held by sequences or reservations),
//    cached (has a key in the map) or not;
//  - evictable: count 0, cached, in the LRU list exactly once;
//  - free: count 0, not cached, in the free list exactly once.
// A cached block is in the key map exactly once, and no two blocks share a
// key (a second block filled with the same content stays private). A
// cached block is never written: only full blocks are committed, and a
// sequence computes only into blocks past its cached prefix.
class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);

  // All-or-nothing: `n` blocks with reference count 1, taken from the free
  // list first, then by evicting the least recently released cached blocks;
  // RESOURCE_EXHAUSTED saying how many were asked for and how many are
  // available.
  absl::StatusOr<std::vector<int32_t>> Allocate(int32_t n);
  // One more owner of an allocated block.
  absl::Status AddRef(int32_t block);
  // Drops one reference to each block, in order; a block whose count
  // reaches 0 becomes evictable (most recently used) if it is cached, free
  // otherwise. Releasing a block nobody holds, or an out-of-range one, is
  // FAILED_PRECONDITION and changes nothing (a double free is a
  // bookkeeping bug worth surfacing).
  absl::Status Release(std::span<const int32_t> blocks);

  // Makes a held, full block findable under `key`. A no-op if the block
  // already has that key or another block has it; FAILED_PRECONDITION if
  // the block is not held or already has another key.
  absl::Status Commit(int32_t block, const BlockHash& key);
  // The blocks caching the longest prefix of `keys` (a chain: stops at the
  // first miss), each with one more reference taken atomically with the
  // lookup, so none can be evicted before the caller holds it.
  std::vector<int32_t> AcquireCached(std::span<const BlockHash> keys);

  // Keys that entered / left the cache since the previous call, netted as
  // KvCacheEvents says.
  KvCacheEvents DrainCacheEvents();
  // Every key cached now (held or evictable).
  std::vector<BlockHash> CachedBlockHashes() const;

  int32_t RefCount(int32_t block) const;
  int32_t num_total() const { return num_total_; }
  // Blocks an Allocate can get: free plus evictable.
  int32_t num_free() const;
  // Blocks held by sequences or reservations (reference count > 0): what a
  // "no block leaked" check compares with 0.
  int32_t num_used() const { return num_total() - num_free(); }
  // Blocks with a key (held or evictable), and those of them nobody holds.
  int32_t num_cached() const;
  int32_t num_evictable() const;
  // Cached blocks reused for other content since construction.
  int64_t num_evictions() const;

 private:
  static constexpr int32_t kNone = -1;
  void LruPushBack(int32_t b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LruUnlink(int32_t b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the least recently released evictable block out of the cache.
  int32_t EvictOne() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LogEvent(const BlockHash& key, bool stored) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Nets the event log in place (at most one entry per key).
  void CompactEvents(bool drop_unseen) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int32_t num_total_;
  mutable absl::Mutex mu_;
  std::vector<int32_t> ref_count_ ABSL_GUARDED_BY(mu_);
  // LIFO free list: recently freed blocks are reused first (warm in cache).
  std::vector<int32_t> free_ ABSL_GUARDED_BY(mu_);
  // Per block: whether it has a key, and which.
  std::vector<bool> cached_ ABSL_GUARDED_BY(mu_);
  std::vector<BlockHash> key_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<BlockHash, int32_t> by_key_ ABSL_GUARDED_BY(mu_);
  // Doubly linked LRU list of evictable blocks through block indices:
  // head is evicted first.
  std::vector<int32_t> lru_prev_ ABSL_GUARDED_BY(mu_);
  std::vector<int32_t> lru_next_ ABSL_GUARDED_BY(mu_);
  int32_t lru_head_ ABSL_GUARDED_BY(mu_) = kNone;
  int32_t lru_tail_ ABSL_GUARDED_BY(mu_) = kNone;
  int32_t lru_size_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t evictions_ ABSL_GUARDED_BY(mu_) = 0;
  // Cache events since the last drain, in order (true: stored).
  std::vector<std::pair<BlockHash, bool>> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem
