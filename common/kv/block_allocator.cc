#include "common/kv/block_allocator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem {

BlockAllocator::BlockAllocator(int32_t num_blocks) : ref_count_(num_blocks, 0) {
  free_.reserve(num_blocks);
  // Pushed in reverse so the first allocations get blocks 0, 1, 2, ...
  for (int32_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

absl::StatusOr<std::vector<int32_t>> BlockAllocator::Allocate(int32_t n) {
  if (n < 0) return absl::InvalidArgumentError(absl::StrCat("cannot allocate ", n, " KV blocks"));
  absl::MutexLock lock(&mu_);
  if (static_cast<size_t>(n) > free_.size()) {
    return absl::ResourceExhaustedError(absl::StrCat("KV cache full: need ", n, " blocks, ",
                                                     free_.size(), " of ", ref_count_.size(),
                                                     " free"));
  }
  std::vector<int32_t> out(free_.end() - n, free_.end());
  free_.resize(free_.size() - n);
  std::reverse(out.begin(), out.end());
  for (int32_t b : out) ref_count_[b] = 1;
  return out;
}

absl::Status BlockAllocator::AddRef(int32_t block) {
  absl::MutexLock lock(&mu_);
  if (block < 0 || block >= static_cast<int32_t>(ref_count_.size()) || ref_count_[block] == 0) {
    return absl::FailedPreconditionError(absl::StrCat("AddRef on unallocated KV block ", block));
  }
  ++ref_count_[block];
  return absl::OkStatus();
}

absl::Status BlockAllocator::Release(std::span<const int32_t> blocks) {
  absl::MutexLock lock(&mu_);
  // Validate first so a bad call changes nothing.
  for (int32_t b : blocks) {
    if (b < 0 || b >= static_cast<int32_t>(ref_count_.size()) || ref_count_[b] == 0) {
      return absl::FailedPreconditionError(absl::StrCat("release of free or invalid KV block ", b));
    }
  }
  for (int32_t b : blocks) {
    if (--ref_count_[b] == 0) free_.push_back(b);
  }
  return absl::OkStatus();
}

int32_t BlockAllocator::RefCount(int32_t block) const {
  absl::MutexLock lock(&mu_);
  if (block < 0 || block >= static_cast<int32_t>(ref_count_.size())) return 0;
  return ref_count_[block];
}

int32_t BlockAllocator::num_free() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int32_t>(free_.size());
}

}  // namespace tandem
