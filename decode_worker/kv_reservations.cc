#include "decode_worker/kv_reservations.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

KvReservations::~KvReservations() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, r] : reservations_) allocator_.Release(r.blocks).IgnoreError();
}

absl::StatusOr<std::vector<int32_t>> KvReservations::Reserve(const std::string& transfer_id,
                                                             int32_t num_blocks, absl::Time expires,
                                                             const std::string& owner,
                                                             std::vector<int32_t> cached_prefix) {
  absl::MutexLock lock(&mu_);
  auto give_back_prefix = [&] { allocator_.Release(cached_prefix).IgnoreError(); };
  if (reservations_.contains(transfer_id)) {
    give_back_prefix();
    return absl::AlreadyExistsError(absl::StrCat("transfer ", transfer_id, " is already reserved"));
  }
  const int32_t fresh_needed = std::max<int32_t>(0, num_blocks - static_cast<int32_t>(cached_prefix.size()));
  absl::StatusOr<std::vector<int32_t>> fresh = allocator_.Allocate(fresh_needed);
  if (!fresh.ok()) {
    give_back_prefix();
    return fresh.status();
  }
  std::vector<int32_t> blocks = std::move(cached_prefix);
  blocks.insert(blocks.end(), fresh->begin(), fresh->end());
  Reservation& r = reservations_[transfer_id];
  r.blocks = blocks;
  r.num_cached = static_cast<int32_t>(blocks.size() - fresh->size());
  r.members.insert(fresh->begin(), fresh->end());
  r.expires = expires;
  r.owner = owner;
  return blocks;
}

absl::StatusOr<std::vector<int32_t>> KvReservations::Claim(const std::string& transfer_id,
                                                           absl::Duration pinned_wait) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end() || it->second.dead || it->second.claiming) {
    return absl::NotFoundError(absl::StrCat("no KV reservation for transfer ", transfer_id,
                                            " (never made, released, or expired)"));
  }
  if (it->second.pins > 0) {
    it->second.claiming = true;
    // The map may rehash while the lock is let go: look the entry up again.
    auto unpinned_or_dead = [this, &transfer_id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      const auto at = reservations_.find(transfer_id);
      return at == reservations_.end() || at->second.pins == 0 || at->second.dead;
    };
    mu_.AwaitWithTimeout(absl::Condition(&unpinned_or_dead), pinned_wait);
    it = reservations_.find(transfer_id);
    if (it == reservations_.end() || it->second.dead) {
      return absl::NotFoundError(absl::StrCat("KV reservation for transfer ", transfer_id,
                                              " was released while its last write finished"));
    }
    it->second.claiming = false;
    if (it->second.pins > 0) {
      return absl::UnavailableError(absl::StrCat("KV transfer ", transfer_id, " is still writing its blocks after ",
                                                 absl::FormatDuration(pinned_wait)));
    }
  }
  std::vector<int32_t> blocks = std::move(it->second.blocks);
  reservations_.erase(it);
  return blocks;
}

absl::StatusOr<std::vector<int32_t>> KvReservations::Blocks(const std::string& transfer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end() || it->second.dead) {
    return absl::NotFoundError(absl::StrCat("no KV reservation ", transfer_id));
  }
  return it->second.blocks;
}

absl::StatusOr<std::vector<int32_t>> KvReservations::WritableBlocks(const std::string& transfer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end() || it->second.dead) {
    return absl::NotFoundError(absl::StrCat("no KV reservation ", transfer_id));
  }
  const std::vector<int32_t>& b = it->second.blocks;
  return std::vector<int32_t>(b.begin() + it->second.num_cached, b.end());
}

bool KvReservations::KillLocked(absl::flat_hash_map<std::string, Reservation>::iterator it) {
  Reservation& r = it->second;
  if (r.dead) return false;
  if (r.pins > 0) {
    r.dead = true;
    return true;
  }
  allocator_.Release(r.blocks).IgnoreError();
  reservations_.erase(it);
  return true;
}

void KvReservations::Release(const std::string& transfer_id) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it != reservations_.end()) KillLocked(it);
}

int KvReservations::ReleaseOwnedBy(const std::string& owner) {
  if (owner.empty()) return 0;
  absl::MutexLock lock(&mu_);
  std::vector<std::string> orphans;
  for (const auto& [id, r] : reservations_) {
    if (!r.dead && !r.claiming && r.owner == owner) orphans.push_back(id);
  }
  for (const std::string& id : orphans) KillLocked(reservations_.find(id));
  return static_cast<int>(orphans.size());
}

int KvReservations::ExpireStale(absl::Time now) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> stale;
  for (const auto& [id, r] : reservations_) {
    if (!r.dead && r.expires <= now) stale.push_back(id);
  }
  for (const std::string& id : stale) {
    auto it = reservations_.find(id);
    TANDEM_LOG(WARNING) << "KV reservation " << id << " expired unclaimed; freeing " << it->second.blocks.size()
                        << " blocks" << (it->second.pins > 0 ? " once the write into them finished" : "");
    KillLocked(it);
  }
  return static_cast<int>(stale.size());
}

absl::Status KvReservations::PinForWrite(const std::string& transfer_id, const std::vector<int32_t>& blocks) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end() || it->second.dead || it->second.claiming) {
    return absl::NotFoundError(
        absl::StrCat("no live KV reservation for transfer ", transfer_id, " (released, expired or claimed)"));
  }
  for (int32_t b : blocks) {
    if (!it->second.members.contains(b)) {
      return absl::PermissionDeniedError(
          absl::StrCat("block ", b, " is not reserved for KV transfer ", transfer_id));
    }
  }
  ++it->second.pins;
  return absl::OkStatus();
}

void KvReservations::Unpin(const std::string& transfer_id) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end() || it->second.pins == 0) {
    TANDEM_LOG(ERROR) << "unpinning KV reservation " << transfer_id << ", which is not pinned";
    return;
  }
  if (--it->second.pins == 0 && it->second.dead) {
    allocator_.Release(it->second.blocks).IgnoreError();
    reservations_.erase(it);
  }
}

size_t KvReservations::size() const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, r] : reservations_) n += r.dead ? 0 : 1;
  return n;
}

int64_t KvReservations::reserved_blocks() const {
  absl::MutexLock lock(&mu_);
  int64_t n = 0;
  for (const auto& [id, r] : reservations_) n += static_cast<int64_t>(r.blocks.size());
  return n;
}

}  // namespace tandem
