// The NCCL KV transport's records (plain C++, built everywhere): the offer
// a decode worker publishes, the per-transfer plan both sides derive the
// same ncclSend/ncclRecv sequence from, and the checks the decode side
// runs on a prefill worker's NcclTransferRequest before it posts receives
// into its pool.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/transport/block_runs.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

inline constexpr std::string_view kTransportNccl = "nccl";
// sizeof(ncclUniqueId) (static_assert-ed where nccl.h is included).
inline constexpr size_t kNcclUniqueIdBytes = 128;
// Up to this many runs per layer: one ncclSend/ncclRecv per run for K and
// for V, straight between the pools. More: the blocks are gathered into a
// staging buffer and sent with one ncclSend per layer (NcclLayerPlan).
inline constexpr size_t kNcclMaxDirectRuns = 8;

// What the decode worker's NCCL offer says (KvPoolDescriptor.remote_key;
// its endpoint is the host id): where its control RPC is served and which
// GPU the pool is on, so that logs and refusals can name it.
struct NcclExport {
  std::string control_address;  // host:port of the DecodeService
  std::string pci_bus_id;
  uint64_t pid = 0;
  bool operator==(const NcclExport&) const = default;
};

std::string EncodeNcclExport(const NcclExport& e);
// INVALID_ARGUMENT naming `owner` when malformed (truncated, no address).
absl::StatusOr<NcclExport> DecodeNcclExport(std::string_view bytes, std::string_view owner);

// How one transfer moves each layer. Direct: per run, ncclSend of the
// run's K, then of its V, into the destination blocks themselves; no
// extra copy, but every p2p op costs a few microseconds of launch and
// protocol set-up, so a scattered block table (hundreds of runs) is slow.
// Staged: the sender gathers K of every block then V of every block into
// one buffer (device-to-device copies at HBM speed, far above the link's),
// sends it with one ncclSend, and the receiver scatters it: two extra
// copies and 2 * blocks * stride bytes of buffer on each side, one p2p op.
struct NcclPlan {
  std::vector<BlockRun> runs;  // consecutive on both sides, token order
  bool staged = false;
  int64_t blocks = 0;
};

NcclPlan PlanNcclTransfer(const std::vector<int32_t>& src, const std::vector<int32_t>& dst,
                          size_t max_direct_runs = kNcclMaxDirectRuns);

// The destination side of a plan, as the request carries it: lengths of
// runs consecutive in dst_blocks.
struct NcclRecvRun {
  int32_t dst = 0;
  int32_t count = 0;
  bool operator==(const NcclRecvRun&) const = default;
};

struct NcclRecvPlan {
  std::vector<NcclRecvRun> runs;
  bool staged = false;
  int64_t blocks = 0;
};

// The checks the decode side makes before posting a single receive:
// a unique id of exactly kNcclUniqueIdBytes (or none, on a cached
// communicator), the pool's layer count and block stride, run lengths
// that add up to dst_blocks and are consecutive, every block in the pool
// and in `reserved` (the reservation of transfer_id). INVALID_ARGUMENT
// for malformed requests, FAILED_PRECONDITION for a layout that differs,
// OUT_OF_RANGE for blocks outside the pool, PERMISSION_DENIED for blocks
// outside the reservation. Returns the receive plan.
absl::StatusOr<NcclRecvPlan> ValidateNcclRequest(const v1::NcclTransferRequest& req, int32_t num_layers,
                                                 int32_t num_blocks, uint64_t block_stride,
                                                 const std::vector<int32_t>& reserved);

// Fills the plan fields of `req` (dst_blocks, run_lengths, staged) from
// the sender's plan.
void SetNcclPlan(const NcclPlan& plan, v1::NcclTransferRequest* req);

}  // namespace tandem
