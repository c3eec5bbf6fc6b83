// KvTransport over CUDA IPC, for a prefill and a decode worker on one host
// (on one GPU or on GPUs with peer access). The decode worker exports its
// KV pool's single cudaMalloc allocation as a cudaIpcMemHandle
// (cuda_ipc_descriptor.h); the prefill worker opens it once per peer and
// copies each layer's blocks device-to-device, straight into the reserved
// destination blocks, on the transfer's own stream: no host staging, no
// network. Finish() waits (polling, bounded by the deadline) for an event
// recorded after the copies.
//
// Ordering: the engine calls on_layer_done after synchronizing its forward
// stream, so a layer's K/V is in memory when SendLayer enqueues its copies;
// the decode worker reads the blocks only after Finish() returned OK (the
// router sends Decode after Prefill succeeded), by which time the event has
// completed, so no cross-process event wait is needed. The event is
// created interprocess-capable so that a later protocol may hand it to the
// decode worker instead.
//
// Refuses, with FAILED_PRECONDITION: host-memory pools (either side), a
// descriptor from another host (host_id.h), a peer GPU this process cannot
// see or reach (no peer access).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/transport/kv_transport.h"

namespace tandem {

// UNIMPLEMENTED in builds without CUDA.
absl::StatusOr<std::unique_ptr<KvTransport>> MakeCudaIpcTransport();

}  // namespace tandem
