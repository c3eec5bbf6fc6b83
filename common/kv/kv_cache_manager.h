// Which KV blocks each sequence owns: one block table per sequence, grown
// as the sequence gets longer and released when it finishes or is
// preempted. The pool memory itself belongs to the backend; this class only
// deals in block indices.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/kv/block_allocator.h"
#include "common/kv/kv_layout.h"

namespace tandem {

using SeqId = int64_t;

// Thread-safe. A sequence's block table is only ever appended to while the
// sequence lives, so spans returned by BlockTable() stay valid until the
// next Reserve()/Free() of that same sequence.
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
  // Releases every block of `seq`. Unknown sequences are a no-op, so error
  // paths may call it unconditionally.
  void Free(SeqId seq);
  bool Contains(SeqId seq) const;

  int32_t num_free_blocks() const { return allocator_.num_free(); }
  int32_t num_used_blocks() const { return allocator_.num_used(); }
  int32_t num_total_blocks() const { return allocator_.num_total(); }
  size_t num_sequences() const;

 private:
  const KvLayout layout_;
  BlockAllocator allocator_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<SeqId, std::vector<int32_t>> tables_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem
