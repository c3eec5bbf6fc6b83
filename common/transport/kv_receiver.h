// The decode side of a KV transport, in one interface: what the decode
// worker calls on the transport it exported its pool with, whichever
// transports that is made of. KvTransport::receiver() hands it out; a
// transport whose writes are all the sender's and complete when its Finish
// does (UCX puts, in-process copies) has none (nullptr), and the decode
// worker then skips these calls.
//
// Callers and threads (decode_worker/):
//   SetWriteGate             the main thread, once, before ExportPool.
//   AcceptAnnouncedTransfer  gRPC handler threads (DecodeService.StartNcclTransfer).
//   WaitReceived             gRPC handler threads (DecodeService.Decode), before
//                            the reservation's blocks are claimed.
// The receiver's own callbacks (ReceiveFailed) run on its transport's
// threads. Implementations are thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// Decode side: the guard of the reserved blocks for a transport that writes
// them on its own receiving thread (staged UCX copies each chunk from a
// staging slot into the pool; NCCL posts receives into them). Each write
// pins its transfer's reservation for as long as it runs, so a reservation
// released meanwhile (the router gave up, the reservation expired) frees
// its blocks only after the last write into them finished; and a write is
// let through only into blocks of its own live reservation, so a late or
// stray chunk can never land in blocks that belong to another sequence by
// now. Thread-safe. The decode worker's KvReservations is the one in use.
class KvWriteGate {
 public:
  virtual ~KvWriteGate() = default;
  // OK, and the reservation is pinned until Unpin(transfer_id): when the
  // transfer has a live reservation holding every block of `blocks`.
  // NOT_FOUND when it has none (never made, released, expired, claimed);
  // PERMISSION_DENIED naming the block when one is not the transfer's.
  virtual absl::Status PinForWrite(const std::string& transfer_id, const std::vector<int32_t>& blocks) = 0;
  virtual void Unpin(const std::string& transfer_id) = 0;
};

class KvReceiver {
 public:
  virtual ~KvReceiver() = default;

  // Before ExportPool: the gate every write of the transport's own threads
  // into the exported pool passes (`gate` must outlive the transport).
  // Receivers whose writes are the sender's (CUDA IPC copies) have no such
  // writes and ignore it.
  virtual void SetWriteGate(KvWriteGate* gate) = 0;

  // A transfer its sender announces before sending, so that this side
  // posts receives for it (only NCCL does: the request is NCCL's, sent to
  // DecodeService.StartNcclTransfer). `writable` holds the blocks of the
  // request's reservation it may write; `on_failed` is called, from a
  // transport thread, with the id of a transfer whose receives failed, so
  // that its reservation is freed. Receivers of sender-driven transports
  // answer NoAnnouncedTransfers (UNIMPLEMENTED).
  using ReceiveFailed = std::function<void(const std::string& transfer_id)>;
  virtual absl::Status AcceptAnnouncedTransfer(const v1::NcclTransferRequest& req,
                                               const std::vector<int32_t>& writable, ReceiveFailed on_failed) = 0;

  // OK once the transfer's data is in its blocks, before the blocks are
  // adopted. `completion` is the prefill side's KvTransfer::completion
  // (relayed by the router). NCCL waits for its own receives (a completed
  // ncclSend does not mean the peer's ncclRecv completed); CUDA IPC waits
  // for the interprocess event named in a non-empty `completion` and
  // refuses one that is not a CUDA IPC completion record
  // (INVALID_ARGUMENT). Receivers with neither (staged UCX: its Finish
  // already had the decode side's acknowledgement) return OK at once;
  // so does NCCL for an id it never accepted. DEADLINE_EXCEEDED past
  // `deadline`.
  virtual absl::Status WaitReceived(std::string_view transfer_id, std::string_view completion,
                                    absl::Time deadline) = 0;
};

// UNIMPLEMENTED: the `transport` KV transport receives no announced
// transfers (its sender writes without announcing them).
absl::Status NoAnnouncedTransfers(std::string_view transport);

}  // namespace tandem
