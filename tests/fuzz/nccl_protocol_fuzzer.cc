// The NCCL transport's records from peers: DecodeNcclExport on a decode
// worker's offer (must re-encode to the same bytes), and ValidateNcclRequest
// on a parsed NcclTransferRequest (a prefill worker's control RPC), whose
// accepted plans must stay inside the pool and the reservation.
#include <cstdlib>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/transport/nccl_protocol.h"
#include "tests/fuzz/quiet_protobuf.h"

namespace {

constexpr int32_t kBlocks = 64;

void FuzzRequest(std::string_view bytes, bool layout_from_request) {
  tandem::v1::NcclTransferRequest req;
  if (!req.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) return;
  // The reservation: the even blocks, so some in-pool blocks are not ours.
  std::vector<int32_t> reserved;
  for (int32_t b = 0; b < kBlocks; b += 2) reserved.push_back(b);
  // Taking the layout from the request lets the fuzzer past the layout
  // checks to the block and run checks.
  const int32_t layers = layout_from_request ? req.num_layers() : 4;
  const uint64_t stride = layout_from_request ? req.block_stride() : 4096;
  absl::StatusOr<tandem::NcclRecvPlan> plan = tandem::ValidateNcclRequest(req, layers, kBlocks, stride, reserved);
  if (!plan.ok()) return;
  const std::unordered_set<int32_t> mine(reserved.begin(), reserved.end());
  int64_t blocks = 0;
  for (const tandem::NcclRecvRun& r : plan->runs) {
    if (r.count <= 0) std::abort();
    for (int32_t i = 0; i < r.count; ++i) {
      if (!mine.contains(r.dst + i)) std::abort();
    }
    blocks += r.count;
  }
  if (blocks != plan->blocks || blocks != req.dst_blocks_size()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      absl::StatusOr<tandem::NcclExport> e = tandem::DecodeNcclExport(bytes, "d0");
      if (e.ok() && tandem::EncodeNcclExport(*e) != bytes) std::abort();
      break;
    }
    case 1: FuzzRequest(bytes, false); break;
    case 2: FuzzRequest(bytes, true); break;
  }
  return 0;
}
