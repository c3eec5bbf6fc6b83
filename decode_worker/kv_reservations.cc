#include "decode_worker/kv_reservations.h"

#include "absl/strings/str_cat.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

KvReservations::~KvReservations() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, r] : reservations_) allocator_.Release(r.blocks).IgnoreError();
}

absl::StatusOr<std::vector<int32_t>> KvReservations::Reserve(const std::string& transfer_id,
                                                             int32_t num_blocks, absl::Time expires) {
  absl::MutexLock lock(&mu_);
  if (reservations_.contains(transfer_id)) {
    return absl::AlreadyExistsError(absl::StrCat("transfer ", transfer_id, " is already reserved"));
  }
  TANDEM_ASSIGN_OR_RETURN(std::vector<int32_t> blocks, allocator_.Allocate(num_blocks));
  reservations_[transfer_id] = {blocks, expires};
  return blocks;
}

absl::StatusOr<std::vector<int32_t>> KvReservations::Claim(const std::string& transfer_id) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end()) {
    return absl::NotFoundError(absl::StrCat("no KV reservation for transfer ", transfer_id,
                                            " (never made, released, or expired)"));
  }
  std::vector<int32_t> blocks = std::move(it->second.blocks);
  reservations_.erase(it);
  return blocks;
}

absl::StatusOr<std::vector<int32_t>> KvReservations::Blocks(const std::string& transfer_id) const {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end()) return absl::NotFoundError(absl::StrCat("no KV reservation ", transfer_id));
  return it->second.blocks;
}

void KvReservations::Release(const std::string& transfer_id) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(transfer_id);
  if (it == reservations_.end()) return;
  allocator_.Release(it->second.blocks).IgnoreError();
  reservations_.erase(it);
}

int KvReservations::ExpireStale(absl::Time now) {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    if (it->second.expires <= now) {
      TANDEM_LOG(WARNING) << "KV reservation " << it->first << " expired unclaimed; freeing "
                          << it->second.blocks.size() << " blocks";
      allocator_.Release(it->second.blocks).IgnoreError();
      reservations_.erase(it++);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

size_t KvReservations::size() const {
  absl::MutexLock lock(&mu_);
  return reservations_.size();
}

int64_t KvReservations::reserved_blocks() const {
  absl::MutexLock lock(&mu_);
  int64_t n = 0;
  for (const auto& [id, r] : reservations_) n += static_cast<int64_t>(r.blocks.size());
  return n;
}

}  // namespace tandem
