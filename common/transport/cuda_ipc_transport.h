// KvTransport over CUDA IPC, for a prefill and a decode worker on one host
// (on one GPU or on GPUs with peer access). The decode worker exports its
// KV pool's single cudaMalloc allocation as a cudaIpcMemHandle
// (cuda_ipc_descriptor.h); the prefill worker opens it once per peer and
// copies the blocks device-to-device, straight into the reserved
// destination blocks: no host staging, no network. A gather kernel
// (cuda_block_copy.h) copies every block of one or more layers per launch;
// SendLayer launches at once while the transfer's previous copies are done
// and otherwise leaves the layer pending for the next launch (the next
// SendLayer finding the copies done, or Finish), so a burst of layers costs
// a few launches, not one per layer. Finish() waits (polling, bounded by
// the deadline) for an event recorded after the copies. Each transfer
// borrows a stream, that event and its block-table buffers from a pool the
// transport keeps (cuda_copy_lane.h): no CUDA object is created per
// transfer once the pool is warm.
//
// Ordering: the engine calls on_layer_done after synchronizing its forward
// stream, so a layer's K/V is in memory when SendLayer enqueues its copies;
// the decode worker reads the blocks only after Finish() returned OK (the
// router sends Decode after Prefill succeeded), by which time the event has
// completed, so no cross-process event wait is needed. The event is
// created interprocess-capable so that a later protocol may hand it to the
// decode worker instead. No copy outlives its transfer (the destructor
// synchronizes the stream), and a transfer that fails (DEADLINE_EXCEEDED
// included) has waited for the copies it launched before it says so: the
// decode worker may reuse the blocks at once.
//
// Refuses, with FAILED_PRECONDITION: host-memory pools (either side), a
// descriptor from another host (host_id.h), a peer GPU this process cannot
// see or reach (no peer access).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/transport/kv_transport.h"

namespace tandem {

struct CudaIpcOptions {
  // false: one cudaMemcpyAsync per run of blocks, K and V apart, as for
  // pools the kernel cannot copy (not 16-byte aligned); for tests of that
  // path.
  bool gather_kernel = true;
};

// UNIMPLEMENTED in builds without CUDA.
absl::StatusOr<std::unique_ptr<KvTransport>> MakeCudaIpcTransport(CudaIpcOptions options = {});

}  // namespace tandem
