#include "common/transport/transfer_checks.h"

#include <algorithm>
#include <limits>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/transport/kv_transport.h"

namespace tandem {

absl::Status CheckExportablePool(KvPoolView& pool, std::string_view transport) {
  const KvLayout& layout = pool.layout();
  if (layout.num_layers > 0 && pool.num_blocks() > 0 && layout.block_bytes() > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("cannot export an empty KV pool over ", std::string(transport), " (",
                                                 layout.num_layers, " layers, ", layout.block_bytes(),
                                                 " bytes per block, ", pool.num_blocks(), " blocks)"));
}

absl::Status CheckDestinationBlocks(const v1::KvPoolDescriptor& remote, std::span<const int32_t> dst_blocks) {
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  const uint64_t stride = remote.block_stride();
  // The highest base decides whether any layer's range can wrap.
  uint64_t top_base = 0;
  for (uint64_t b : remote.key_base()) top_base = std::max(top_base, b);
  for (uint64_t b : remote.value_base()) top_base = std::max(top_base, b);
  absl::flat_hash_set<int32_t> seen;
  seen.reserve(dst_blocks.size());
  for (int32_t b : dst_blocks) {
    if (b < 0 || b >= remote.num_blocks()) {
      return absl::InvalidArgumentError(absl::StrCat("destination block ", b, " is outside the pool of ",
                                                     remote.worker_id(), " (", remote.num_blocks(), " blocks)"));
    }
    if (!seen.insert(b).second) {
      return absl::InvalidArgumentError(absl::StrCat("destination block ", b, " appears twice in one transfer"));
    }
    // end = base + (b + 1) * stride must not wrap.
    const uint64_t blocks_to_end = static_cast<uint64_t>(b) + 1;
    if (stride != 0 && (blocks_to_end > kMax / stride || top_base > kMax - blocks_to_end * stride)) {
      return absl::InvalidArgumentError(absl::StrCat("destination block ", b, " of ", remote.worker_id(),
                                                     ": its address range overflows (stride ", stride, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckDescriptorTransport(const v1::KvPoolDescriptor& dest, std::string_view transport) {
  if (dest.transport() == transport) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("decode worker ", dest.worker_id(), " exported its KV pool over '",
                                                    dest.transport(), "', not ", std::string(transport)));
}

absl::Status CheckSourceBlocks(const KvTransferSpec& spec, int32_t local_num_blocks) {
  if (spec.src_blocks.size() != spec.dst_blocks.size()) {
    return absl::InvalidArgumentError(absl::StrCat("KV transfer ", spec.transfer_id, ": ", spec.src_blocks.size(),
                                                   " source blocks but ", spec.dst_blocks.size(), " destinations"));
  }
  for (int32_t b : spec.src_blocks) {
    if (b < 0 || b >= local_num_blocks) {
      return absl::InvalidArgumentError(absl::StrCat("KV transfer ", spec.transfer_id, ": source block ", b,
                                                     " is outside the local pool (", local_num_blocks, " blocks)"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckLayer(std::string_view transfer, int layer, int num_layers) {
  if (layer < 0 || layer >= num_layers) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(transfer), ": layer ", layer, " out of range"));
  }
  return absl::OkStatus();
}

absl::Status CheckStillSending(std::string_view transfer, const std::optional<absl::Status>& outcome) {
  if (!outcome.has_value()) return absl::OkStatus();
  if (!outcome->ok()) return *outcome;
  return absl::FailedPreconditionError(absl::StrCat(std::string(transfer), ": SendLayer after Finish"));
}

absl::Status MissedDeadline(std::string_view transfer) {
  return absl::DeadlineExceededError(absl::StrCat(std::string(transfer), " missed its deadline"));
}

bool PastDeadline(const KvTransferSpec& spec, absl::Time now) { return now > spec.deadline; }

absl::Status CheckTransferDeadline(const KvTransferSpec& spec, absl::Time now) {
  if (PastDeadline(spec, now)) return MissedDeadline(absl::StrCat("KV transfer ", spec.transfer_id));
  return absl::OkStatus();
}

absl::Time FinishDeadline(const KvTransferSpec& spec, absl::Time now, bool* by_timeout) {
  const absl::Time timeout = spec.finish_timeout == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                             : now + spec.finish_timeout;
  *by_timeout = timeout < spec.deadline;
  return std::min(timeout, spec.deadline);
}

absl::Status FinishTimedOut(const KvTransferSpec& spec) {
  return absl::UnavailableError(absl::StrCat("KV transfer ", spec.transfer_id, ": the decode worker did not confirm its ",
                                             "writes within ", absl::FormatDuration(spec.finish_timeout)));
}

absl::Status FinishExpired(const KvTransferSpec& spec, bool by_timeout, std::string_view transfer) {
  return by_timeout ? FinishTimedOut(spec) : MissedDeadline(transfer);
}

}  // namespace tandem
