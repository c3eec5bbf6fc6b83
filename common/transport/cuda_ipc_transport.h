// KvTransport over CUDA IPC, for a prefill and a decode worker on one host
// (on one GPU or on GPUs with peer access). The decode worker exports its
// KV pool's single cudaMalloc allocation as a cudaIpcMemHandle
// (cuda_ipc_descriptor.h); the prefill worker opens it once per peer and
// copies the blocks device-to-device, straight into the reserved
// destination blocks: no host staging, no network. A gather kernel
// (cuda_block_copy.h) copies every block of one or more layers per launch;
// SendLayer holds its layer while the calls come in a burst and launches
// what is held once the burst ends (layer_batches.h: the last layer, a
// pause between calls, or Finish), so a burst of layers costs one launch
// and paced layers (a forward pass) launch in their own hooks. Finish()
// records the lane's interprocess event after the last copy and polls
// (bounded by the deadline and the finish timeout, transfer_checks.h) until
// the transfer's stream is idle.
// Each transfer borrows that stream and its block-table buffers from a
// pool the transport keeps (cuda_copy_lane.h): no CUDA object is created
// per transfer once the pool is warm.
//
// Ordering: the engine calls on_layer_done after synchronizing its forward
// stream, so a layer's K/V is in memory when SendLayer enqueues its copies
// (held layers are in memory too, and stay so until the transfer ends);
// the decode worker reads the blocks only after Finish() returned OK (the
// router sends Decode after Prefill succeeded), and, on its side, after
// WaitReceived saw the interprocess event that Finish recorded behind the
// copies fire: the event's handle travels as the transfer's completion()
// (PrefillResponse.kv_completion, relayed in DecodeRequest). No copy outlives
// its transfer (the destructor synchronizes the stream), and a transfer
// that fails (DEADLINE_EXCEEDED included) has waited for the copies it
// launched before it says so: the decode worker may reuse the blocks at
// once.
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
