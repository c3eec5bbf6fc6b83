// KV blocks a decode worker set aside for requests whose prefill is still
// running elsewhere: the destination of a KV transfer. Each reservation
// has an owner (the transfer id) and an expiry, so blocks of a transfer
// that never completes (router gone, prefill failed without ReleaseKv) come
// back on their own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/kv/block_allocator.h"

namespace tandem {

// Thread-safe: gRPC handlers reserve, claim and release; the decode loop
// expires.
class KvReservations {
 public:
  explicit KvReservations(BlockAllocator& allocator) : allocator_(allocator) {}
  ~KvReservations();  // frees whatever is still reserved

  // RESOURCE_EXHAUSTED (from the allocator) when the blocks are not free.
  absl::StatusOr<std::vector<int32_t>> Reserve(const std::string& transfer_id, int32_t num_blocks,
                                               absl::Time expires);
  // Hands the blocks to the caller, who now owns them (the decode loop
  // adopts them for the sequence). NOT_FOUND if unknown or expired.
  absl::StatusOr<std::vector<int32_t>> Claim(const std::string& transfer_id);
  // The blocks of a live reservation, still reserved (the NCCL transport
  // checks a transfer's destination against them). NOT_FOUND if unknown.
  absl::StatusOr<std::vector<int32_t>> Blocks(const std::string& transfer_id) const;
  // Frees a reservation; unknown ids are a no-op (release is idempotent).
  void Release(const std::string& transfer_id);
  // Frees every reservation past its expiry; returns how many.
  int ExpireStale(absl::Time now);

  size_t size() const;
  int64_t reserved_blocks() const;

 private:
  struct Reservation {
    std::vector<int32_t> blocks;
    absl::Time expires;
  };
  BlockAllocator& allocator_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Reservation> reservations_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem
