// KvTransport over NCCL point-to-point, for prefill and decode workers on
// different GPUs (one process per GPU, one host or several).
//
// Pairs. One communicator per (prefill worker, decode worker) pair, two
// ranks: prefill 0, decode 1. The prefill side makes it on the first
// transfer to a decode worker: ncclGetUniqueId, then the id travels in
// the first NcclTransferRequest (DecodeService.StartNcclTransfer, the
// existing gRPC control path), and both sides call ncclCommInitRank
// concurrently: the decode side on the pair's own thread, after the RPC
// returned. Both use the non-blocking configuration and poll, so the wait
// is bounded. Cached per peer worker id; Disconnect or a failure destroys
// (or aborts) it and the next transfer makes a new one.
//
// Transfers. StartTransfer sends the request (destination blocks, plan,
// layer count) under the pair's lock, so the decode side queues the pair's
// transfers in the order the prefill side issues them. SendLayer(l) issues
// the layer's ncclSends (one group: K and V of every run, or one staged
// buffer, nccl_protocol.h) on the pair's stream, so layer-wise sends
// overlap the prefill compute of later layers. NCCL matches a pair's p2p
// ops in issue order, so the prefill side issues a transfer's layers only
// once every earlier transfer of the pair issued all of its own (a batch
// of several requests to one decode worker interleaves SendLayer calls).
// The decode side posts all layers' receives at once.
//
// Completion. Finish() records an event after the transfer's sends and
// polls it and ncclCommGetAsyncError until the deadline or the finish
// timeout, whichever comes first (FinishDeadline, transfer_checks.h). On an
// error or a timeout the communicator is aborted (ncclCommAbort) and
// dropped: the transfer ends UNAVAILABLE (an error, or the finish timeout:
// the decode worker stopped receiving) or DEADLINE_EXCEEDED, every other
// transfer of the pair fails too. A completed send does not mean the
// receive did, so the decode worker calls its receiver's WaitReceived
// (kv_receiver.h) before it adopts the blocks; a
// receive that fails or times out aborts the decode side's communicator
// and frees the reservation (the on_failed callback).
//
// Known limit: as with the other transports, a reservation that expires
// while receives are still in flight can be reused under them; the TTL is
// far above transfer times.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/transport/kv_transport.h"
#include "common/transport/nccl_ops.h"
#include "common/transport/nccl_protocol.h"

namespace tandem {

// The prefill side's way to the decode worker's StartNcclTransfer.
class NcclControl {
 public:
  virtual ~NcclControl() = default;
  virtual absl::Status Send(const std::string& address, const v1::NcclTransferRequest& req, absl::Time deadline) = 0;
};

// gRPC (a channel per address, cached).
std::unique_ptr<NcclControl> MakeGrpcNcclControl();

struct NcclTransportOptions {
  // Tests with a fake NcclOps run host pools.
  bool require_device_pools = true;
  // Empty: LocalHostId().
  std::string host_id;
  // Communicator creation, beyond which both sides give up.
  absl::Duration init_timeout = absl::Seconds(60);
  // How long the decode side waits for a transfer's data (the request's
  // timeout_seconds, from the prefill side's deadline, capped to this).
  absl::Duration max_receive_timeout = absl::Seconds(120);
  size_t max_direct_runs = kNcclMaxDirectRuns;
};

// Introspection for tests.
class NcclTransportStats {
 public:
  virtual ~NcclTransportStats() = default;
  virtual size_t send_peers() const = 0;     // cached prefill-side communicators
  virtual size_t receive_pairs() const = 0;  // live decode-side communicators
};

std::unique_ptr<KvTransport> MakeNcclTransportWith(std::shared_ptr<NcclOps> ops, std::unique_ptr<NcclControl> control,
                                                   NcclTransportOptions options);

// With MakeCudaNcclOps and gRPC control. UNIMPLEMENTED without NCCL.
absl::StatusOr<std::unique_ptr<KvTransport>> MakeNcclTransport();

}  // namespace tandem
