#include "common/transport/nccl_protocol.h"

#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "common/transport/wire_codec.h"

namespace tandem {
namespace {

constexpr uint32_t kExportMagic = 0x314c434e;  // "NCL1"

}  // namespace

std::string EncodeNcclExport(const NcclExport& e) {
  wire::Writer w;
  w.U32(kExportMagic);
  w.Bytes(e.control_address);
  w.Bytes(e.pci_bus_id);
  w.U64(e.pid);
  return std::move(w.str());
}

absl::StatusOr<NcclExport> DecodeNcclExport(std::string_view bytes, std::string_view owner) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL export of decode worker ", std::string(owner), " is malformed: ", std::string(why)));
  };
  wire::Reader r(bytes);
  uint32_t magic = 0;
  NcclExport e;
  if (!r.U32(&magic) || magic != kExportMagic) return bad("not an NCCL export record");
  if (!r.Bytes(&e.control_address, 1024) || !r.Bytes(&e.pci_bus_id, 64) || !r.U64(&e.pid)) return bad("truncated");
  if (!r.done()) return bad(absl::StrCat(r.remaining(), " trailing bytes"));
  if (e.control_address.empty()) return bad("no control address");
  return e;
}

NcclPlan PlanNcclTransfer(const std::vector<int32_t>& src, const std::vector<int32_t>& dst, size_t max_direct_runs) {
  NcclPlan p;
  p.runs = PlanBlockRuns(src, dst);
  p.blocks = static_cast<int64_t>(src.size());
  p.staged = p.runs.size() > max_direct_runs;
  return p;
}

void SetNcclPlan(const NcclPlan& plan, v1::NcclTransferRequest* req) {
  req->clear_dst_blocks();
  req->clear_run_lengths();
  for (const BlockRun& r : plan.runs) {
    for (int32_t i = 0; i < r.count; ++i) req->add_dst_blocks(r.dst + i);
    req->add_run_lengths(r.count);
  }
  req->set_staged(plan.staged);
}

absl::StatusOr<NcclRecvPlan> ValidateNcclRequest(const v1::NcclTransferRequest& req, int32_t num_layers,
                                                 int32_t num_blocks, uint64_t block_stride,
                                                 const std::vector<int32_t>& reserved) {
  const std::string who = absl::StrCat("NCCL transfer ", req.transfer_id(), " from prefill worker ",
                                       req.prefill_worker_id());
  if (req.transfer_id().empty() || req.prefill_worker_id().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": no transfer id or prefill worker id"));
  }
  if (!req.unique_id().empty() && req.unique_id().size() != kNcclUniqueIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": the NCCL unique id has ", req.unique_id().size(),
                                                   " bytes, not ", kNcclUniqueIdBytes));
  }
  if (req.num_layers() != num_layers) {
    return absl::FailedPreconditionError(
        absl::StrCat(who, ": KV layout mismatch: num_layers is ", num_layers, " here but ", req.num_layers(), " there"));
  }
  if (req.block_stride() != block_stride) {
    return absl::FailedPreconditionError(absl::StrCat(who, ": KV layout mismatch: block_stride is ", block_stride,
                                                      " here but ", req.block_stride(), " there"));
  }
  if (req.dst_blocks().empty()) return absl::InvalidArgumentError(absl::StrCat(who, ": no destination blocks"));
  if (!(req.timeout_seconds() > 0)) return absl::InvalidArgumentError(absl::StrCat(who, ": no timeout"));
  std::unordered_set<int32_t> mine(reserved.begin(), reserved.end());
  std::unordered_set<int32_t> seen;
  for (int32_t b : req.dst_blocks()) {
    if (b < 0 || b >= num_blocks) {
      return absl::OutOfRangeError(absl::StrCat(who, ": destination block ", b, " outside the pool's ", num_blocks));
    }
    if (!mine.contains(b)) {
      return absl::PermissionDeniedError(absl::StrCat(who, ": block ", b, " is not reserved for the transfer"));
    }
    if (!seen.insert(b).second) return absl::InvalidArgumentError(absl::StrCat(who, ": block ", b, " twice"));
  }
  NcclRecvPlan plan;
  plan.staged = req.staged();
  plan.blocks = req.dst_blocks_size();
  int64_t at = 0;
  for (int32_t n : req.run_lengths()) {
    if (n <= 0 || at + n > req.dst_blocks_size()) {
      return absl::InvalidArgumentError(absl::StrCat(who, ": run lengths do not split the destination blocks"));
    }
    const int32_t first = req.dst_blocks(static_cast<int>(at));
    for (int32_t i = 1; i < n; ++i) {
      if (req.dst_blocks(static_cast<int>(at + i)) != first + i) {
        return absl::InvalidArgumentError(absl::StrCat(who, ": run at block ", first, " is not consecutive"));
      }
    }
    plan.runs.push_back({first, n});
    at += n;
  }
  if (at != req.dst_blocks_size()) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": run lengths cover ", at, " of ", req.dst_blocks_size(),
                                                   " destination blocks"));
  }
  return plan;
}

}  // namespace tandem
