// KV blocks a decode worker set aside for requests whose prefill is still
// running elsewhere: the destination of a KV transfer. Each reservation
// has an owner (the transfer id) and an expiry, so blocks of a transfer
// that never completes (router gone, prefill failed without ReleaseKv) come
// back on their own.
//
// It is also the transports' write gate (KvWriteGate): a write into a
// reservation's blocks pins it, and a reservation released or expired while
// pinned is dead (unknown to Claim, Blocks and new pins) but keeps its
// blocks until its last pin goes, so blocks return to the allocator only
// once nothing writes them any more.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/kv/block_allocator.h"
#include "common/transport/kv_transport.h"

namespace tandem {

// Thread-safe: gRPC handlers reserve, claim and release; the decode loop
// expires; transport threads pin and unpin.
class KvReservations final : public KvWriteGate {
 public:
  explicit KvReservations(BlockAllocator& allocator) : allocator_(allocator) {}
  ~KvReservations() override;  // frees whatever is still reserved

  // RESOURCE_EXHAUSTED (from the allocator) when the blocks are not free.
  // `owner` names the router instance that reserved (empty: none), for
  // ReleaseOwnedBy.
  // `cached_prefix`: blocks already holding the prompt's first blocks (the
  // prefix cache's, each referenced once for this call); they lead the
  // reservation, count toward `num_blocks`, are released with it, and are
  // never writable (PinForWrite refuses them). On any error they are
  // released here.
  absl::StatusOr<std::vector<int32_t>> Reserve(const std::string& transfer_id, int32_t num_blocks,
                                               absl::Time expires, const std::string& owner = "",
                                               std::vector<int32_t> cached_prefix = {});
  // Hands the blocks to the caller, who now owns them (the decode loop
  // adopts them for the sequence). NOT_FOUND if unknown, released or
  // expired. A write still pinning the reservation is waited for (up to
  // `pinned_wait`; then UNAVAILABLE, the reservation left as it was):
  // a finished transfer has none, but a sender may send a chunk twice.
  absl::StatusOr<std::vector<int32_t>> Claim(const std::string& transfer_id,
                                             absl::Duration pinned_wait = absl::Seconds(5));
  // The blocks of a live reservation, still reserved (the NCCL transport
  // checks a transfer's destination against them). NOT_FOUND if unknown.
  absl::StatusOr<std::vector<int32_t>> Blocks(const std::string& transfer_id) const;
  // The blocks of a live reservation a transfer may write: all but its
  // cached prefix (what the NCCL transport checks a destination against
  // and pins). NOT_FOUND if unknown.
  absl::StatusOr<std::vector<int32_t>> WritableBlocks(const std::string& transfer_id) const;
  // Frees a reservation (once unpinned); unknown ids are a no-op (release
  // is idempotent).
  void Release(const std::string& transfer_id);
  // Frees every live reservation of router instance `owner` (once
  // unpinned): that router is gone or replaced, so nobody will claim them.
  // Returns how many. An empty owner matches nothing.
  int ReleaseOwnedBy(const std::string& owner);
  // Frees every reservation past its expiry (once unpinned); returns how
  // many expired.
  int ExpireStale(absl::Time now);

  // KvWriteGate.
  absl::Status PinForWrite(const std::string& transfer_id, const std::vector<int32_t>& blocks) override;
  void Unpin(const std::string& transfer_id) override;

  // Live reservations.
  size_t size() const;
  // Blocks held by reservations, dead ones still pinned included.
  int64_t reserved_blocks() const;

 private:
  struct Reservation {
    std::vector<int32_t> blocks;
    int32_t num_cached = 0;  // leading blocks from the prefix cache: read-only
    // The blocks a transfer may write, for PinForWrite: all but the cached
    // prefix.
    absl::flat_hash_set<int32_t> members;
    absl::Time expires;
    std::string owner;  // the reserving router instance; may be empty
    int pins = 0;
    bool dead = false;      // released or expired; freed at the last Unpin
    bool claiming = false;  // Claim waits for the pins to go; no new ones
  };
  // Frees `it`'s blocks now, or marks it dead if pinned. Returns whether it
  // was live.
  bool KillLocked(absl::flat_hash_map<std::string, Reservation>::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  BlockAllocator& allocator_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Reservation> reservations_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tandem
