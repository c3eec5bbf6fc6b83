// Hands out fixed-size KV blocks of one pool by index, with reference
// counts so that several sequences may share a block (prefix sharing).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace tandem {

// Thread-safe: gRPC handler threads reserve blocks for incoming transfers
// while the batching loop frees finished sequences' blocks.
// Invariant: a block is free iff its reference count is 0, and each free
// block appears exactly once in the free list.
class BlockAllocator {
 public:
  explicit BlockAllocator(int32_t num_blocks);

  // All-or-nothing: `n` blocks with reference count 1, or RESOURCE_EXHAUSTED
  // saying how many were asked for and how many are free.
  absl::StatusOr<std::vector<int32_t>> Allocate(int32_t n);
  // One more owner of an allocated block.
  absl::Status AddRef(int32_t block);
  // Drops one reference to each block; a block whose count reaches 0 is free
  // again. Releasing a free or out-of-range block is FAILED_PRECONDITION
  // (a double free is a bookkeeping bug worth surfacing).
  absl::Status Release(std::span<const int32_t> blocks);

  int32_t RefCount(int32_t block) const;
  int32_t num_total() const { return static_cast<int32_t>(ref_count_.size()); }
  int32_t num_free() const;
  int32_t num_used() const { return num_total() - num_free(); }

 private:
  mutable absl::Mutex mu_;
  std::vector<int32_t> ref_count_ ABSL_GUARDED_BY(mu_);
  // LIFO free list: recently freed blocks are reused first (warm in cache).
  std::vector<int32_t> free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem
