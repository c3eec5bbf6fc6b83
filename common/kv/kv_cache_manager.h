// Which KV blocks each sequence owns: one block table per sequence, grown
// as the sequence gets longer and released when it finishes or is
// preempted, and the prefix cache over those blocks: a new sequence starts
// from the longest cached prefix of its tokens (MatchPrefix), and its full
// blocks become cached as they fill (CommitFullBlocks), staying cached
// after it ends until the pool needs them back. The pool memory itself
// belongs to the backend; this class only deals in block indices.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/kv/block_allocator.h"
#include "common/kv/block_hash.h"
#include "common/kv/kv_cache_events.h"
#include "common/kv/kv_layout.h"

namespace tandem {

using SeqId = int64_t;

// Thread-safe. A sequence's block table is only ever appended to while the
// sequence lives, so spans returned by BlockTable() stay valid until the
// next Reserve()/Free() of that same sequence.
//
// Invariant: the first `keys.size()` blocks of a sequence's table are full
// and their keys are the hash chain of its first tokens under its cache
// salt; those blocks are never written again (the sequence computes only
// past them), which is what lets other sequences share them.
class KvCacheManager {
 public:
  KvCacheManager(const KvLayout& layout, int32_t num_blocks);

  const KvLayout& layout() const { return layout_; }
  BlockAllocator& allocator() { return allocator_; }

  // Grows `seq`'s table (creating it if new) to cover `num_tokens` positions.
  // All-or-nothing: on RESOURCE_EXHAUSTED the table is unchanged.
  absl::Status Reserve(SeqId seq, int64_t num_tokens);
  // Blocks needed beyond what `seq` holds to cover `num_tokens` positions.
  int32_t BlocksNeeded(SeqId seq, int64_t num_tokens) const;
  // Registers blocks that were allocated elsewhere (e.g. reserved for an
  // incoming KV transfer) as `seq`'s table. INVALID_ARGUMENT if `seq` exists.
  absl::Status Adopt(SeqId seq, std::vector<int32_t> blocks);
  // Copy of the table; NOT_FOUND for an unknown sequence.
  absl::StatusOr<std::vector<int32_t>> BlockTable(SeqId seq) const;
  // Releases every block of `seq`: its committed (full, keyed) blocks stay
  // cached, evictable, the others are free. Unknown sequences are a no-op,
  // so error paths may call it unconditionally.
  void Free(SeqId seq);
  bool Contains(SeqId seq) const;

  // --- Prefix cache ---
  // Starts `seq`'s table (it must hold none: FAILED_PRECONDITION otherwise)
  // with the cached blocks of the longest cached prefix of `tokens` under
  // `cache_salt`, referenced, and returns how many tokens they hold: whole
  // blocks only, and never all of `tokens` (the last token is always left
  // to compute, so the step that computes it samples). 0 on a miss, with
  // no table created.
  absl::StatusOr<int32_t> MatchPrefix(SeqId seq, std::span<const int32_t> tokens, std::string_view cache_salt);
  // The same lookup for blocks that are not a sequence's yet (a decode
  // worker's reservation for an incoming transfer): the cached blocks of
  // the longest cached prefix of `tokens` under `cache_salt`, whole blocks
  // and never the last token, each referenced once for the caller (who
  // releases them through allocator(), or hands them to Adopt). Counts the
  // lookup (RecordPrefixLookup).
  std::vector<int32_t> AcquireCachedPrefix(std::span<const int32_t> tokens, std::string_view cache_salt);
  // Makes every block of `seq` that `num_computed` leading `tokens` fill
  // findable by its key (done once per block; later calls hash only newly
  // full blocks). `tokens` and `cache_salt` must be the sequence's own,
  // the same on every call. NOT_FOUND for an unknown sequence.
  absl::Status CommitFullBlocks(SeqId seq, std::span<const int32_t> tokens, int64_t num_computed,
                                std::string_view cache_salt);
  // Counts one admission's lookup: `queried` prompt tokens, `hit` of them
  // found cached (the metrics' tandem_prefix_cache_*_tokens_total).
  void RecordPrefixLookup(int64_t queried, int64_t hit);
  // Thread-safe. Keys that entered / left the prefix cache since the last
  // call (batched and netted: see kv_cache_events.h).
  KvCacheEvents DrainCacheEvents() { return allocator_.DrainCacheEvents(); }
  // Thread-safe. Every key cached now (a router that restarted, or saw a
  // gap, asks for the full set).
  std::vector<BlockHash> CachedBlockHashes() const { return allocator_.CachedBlockHashes(); }

  // Blocks an allocation can get (free or evictable).
  int32_t num_free_blocks() const { return allocator_.num_free(); }
  // Blocks held by sequences or reservations; a cached block nobody holds
  // is not used. "No block leaked" means this is 0.
  int32_t num_used_blocks() const { return allocator_.num_used(); }
  int32_t num_total_blocks() const { return allocator_.num_total(); }
  // Blocks in the prefix cache (held or not), and those nobody holds.
  int32_t num_cached_blocks() const { return allocator_.num_cached(); }
  int32_t num_evictable_blocks() const { return allocator_.num_evictable(); }
  int64_t num_evictions() const { return allocator_.num_evictions(); }
  int64_t prefix_queried_tokens() const { return prefix_queried_tokens_.load(std::memory_order_relaxed); }
  int64_t prefix_hit_tokens() const { return prefix_hit_tokens_.load(std::memory_order_relaxed); }
  size_t num_sequences() const;

 private:
  struct SeqBlocks {
    std::vector<int32_t> blocks;
    // Keys of blocks[0, keys.size()): committed or matched.
    std::vector<BlockHash> keys;
  };

  const KvLayout layout_;
  BlockAllocator allocator_;
  mutable absl::Mutex mu_;  // taken before the allocator's, never after
  absl::flat_hash_map<SeqId, SeqBlocks> tables_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> prefix_queried_tokens_{0};
  std::atomic<int64_t> prefix_hit_tokens_{0};
};

}  // namespace tandem
