// Moving a request's KV blocks from a prefill worker's pool into the blocks
// a decode worker reserved for it. One interface, several transports: UCX
// puts (host memory, between processes and hosts), staged UCX (GPU memory
// through pinned host buffers, between hosts), CUDA IPC (GPU memory, one
// host), in-process (unit tests), and "auto", which exports with all that
// suit the pool and picks per destination (transport_selection.h). NCCL
// point-to-point (GPU pools on GPUs of different processes, nccl_transport.h)
// is one more.
//
// Data flow: the decode worker calls ExportPool() once and hands the
// descriptor out with every reservation (ReserveKvResponse.pool). The
// router passes it to the prefill worker, which calls StartTransfer() for
// the request, SendLayer(l) from the forward pass's on_layer_done hook as
// each layer's KV lands in its own pool, and Finish() before it reports the
// prefill done. Only after Finish() returns OK may the decode worker read
// the blocks (the router calls Decode after Prefill succeeded).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/engine/model_backend.h"
#include "common/kv/kv_layout.h"
#include "common/transport/kv_receiver.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// Who is on this side of a transfer; both sides must serve the same model
// with the same numerics (ModelBackend::numerics; empty: not checked).
struct KvEndpointInfo {
  std::string worker_id;
  std::string model_fingerprint;
  std::string numerics = "";
};

// One request's KV on its way. Used by one thread (the prefill loop).
class KvTransfer {
 public:
  virtual ~KvTransfer() = default;
  // Starts copying layer `layer` (K and V) of the source blocks into the
  // destination blocks. Non-blocking.
  virtual absl::Status SendLayer(int layer) = 0;
  // Blocks until every started copy is complete in the destination's
  // memory. DEADLINE_EXCEEDED past the transfer's deadline; UNAVAILABLE if
  // the peer is gone. After an error the transfer is abandoned (the decode
  // worker frees the reservation). Called after a SendLayer failed, it may
  // return a more precise failure (the staged UCX transport fetches the
  // decode side's reason for turning a chunk away); an OK from it then
  // does not make the transfer good.
  virtual absl::Status Finish() = 0;
  virtual int64_t bytes_sent() const = 0;
  virtual const std::string& id() const = 0;
  // The transport that moves it ("cuda_ipc", "ucx", ...): with auto, the
  // one chosen for this destination.
  virtual std::string_view transport() const = 0;
  // After Finish returned OK: the transport's own completion signal for
  // the decode side, which the prefill worker returns with its response
  // and the router relays to KvReceiver::WaitReceived (CUDA IPC: the
  // interprocess event recorded after the last copy). Empty for the
  // transports that have none.
  virtual std::string completion() const { return {}; }
};

struct KvTransferSpec {
  std::string transfer_id;
  std::vector<int32_t> src_blocks;  // in the local pool, in token order
  std::vector<int32_t> dst_blocks;  // in the destination pool, same length
  absl::Time deadline = absl::InfiniteFuture();
  // How long Finish may wait for the writes already issued to be confirmed
  // (FinishDeadline in transfer_checks.h): a decode worker that died
  // mid-transfer is noticed by some transports only after 15-20 s, and the
  // prefill loop must not stall that long. Past it the transfer fails
  // UNAVAILABLE (the peer is unresponsive) and its source blocks are freed.
  absl::Duration finish_timeout = absl::InfiniteDuration();
};

// Thread-safe: connections are cached per peer under a lock.
class KvTransport {
 public:
  virtual ~KvTransport() = default;
  virtual std::string_view name() const = 0;

  // Decode side: makes `pool` writable by peers for the transport's life
  // and returns what peers need to reach it. `pool` must outlive the
  // transport.
  virtual absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool,
                                                          const KvEndpointInfo& self) = 0;

  // Prefill side: connects to (or reuses the connection to) the pool
  // described by `dest`, refusing with FAILED_PRECONDITION when it does not
  // match `pool`'s layout or `self`'s model (CheckKvCompatible), and
  // returns the transfer. `pool` must outlive the transfer.
  virtual absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(
      KvPoolView& pool, const KvEndpointInfo& self, const v1::KvPoolDescriptor& dest,
      KvTransferSpec spec) = 0;

  // Drops the cached connection to a peer (it left or failed).
  virtual void Disconnect(std::string_view worker_id) = 0;

  // Decode side: the hooks the decode worker calls (write gate, announced
  // transfers, WaitReceived; kv_receiver.h), or nullptr for a transport
  // that needs none (its writes are the sender's and are complete when
  // its Finish is: UCX puts, in-process copies). Lives as long as the
  // transport; the same object on every call.
  virtual KvReceiver* receiver() { return nullptr; }
};

// "auto" (every transport this build has, chosen per destination), "ucx"
// (puts for host pools, staged for GPU pools), "ucx_staged", "cuda_ipc"
// (UNIMPLEMENTED without CUDA), "inproc". INVALID_ARGUMENT for others.
absl::StatusOr<std::unique_ptr<KvTransport>> CreateKvTransport(std::string_view name);

// The names CreateKvTransport accepts, for flag help and errors.
std::vector<std::string> KvTransportNames();

v1::KvLayoutSpec ToProto(const KvLayout& layout);

// The handshake: OK when `remote` describes a pool this side may write
// into; otherwise FAILED_PRECONDITION naming the field that differs and
// both values ("KV layout mismatch with decode worker d0: block_size is 16
// here but 32 there"). Also checks the descriptor is self-consistent
// (a base address per layer, destination blocks in range).
absl::Status CheckKvCompatible(const KvEndpointInfo& self, const KvLayout& local,
                               const v1::KvPoolDescriptor& remote);
absl::Status CheckBlocksInRange(const v1::KvPoolDescriptor& remote,
                                const std::vector<int32_t>& dst_blocks);

// What every transport checks before a transfer starts: the handshake
// (CheckKvCompatible), destination and source blocks in range, and as
// many sources as destinations.
absl::Status CheckTransfer(const KvEndpointInfo& self, KvPoolView& pool, const v1::KvPoolDescriptor& dest,
                           const KvTransferSpec& spec);

// The transport-independent part of a pool descriptor (who, layout, where
// each layer's K and V arrays start); the transport adds its endpoint and
// remote key.
v1::KvPoolDescriptor DescribePool(KvPoolView& pool, const KvEndpointInfo& self, std::string_view transport);

}  // namespace tandem
