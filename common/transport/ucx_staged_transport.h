// KvTransport over UCX active messages through host staging buffers: the
// transport for GPU KV pools between hosts when the UCX build has no CUDA
// support (Debian's does not) and there is no GPU-direct path. Per layer
// and per chunk of blocks:
//
//   prefill: device -> pinned slot (cudaMemcpyAsync on the transfer's stream)
//            -> AM with the slot as rendezvous data (UCX moves it: RDMA,
//               shared memory or TCP)
//   decode:  -> pinned slot -> device, into the reserved blocks
//            (cudaMemcpyAsync on the receiver's stream)
//
// Each side has several slots, so one chunk's device-to-host copy, another
// chunk's network transfer and a third's host-to-device copy overlap, also
// across layers and transfers. Completion is explicit: after all chunks'
// sends completed the sender sends FINISH (chunk count) and waits for the
// decode side's acknowledgement, which comes once every chunk is copied
// into the pool; so Finish() returning OK still means the KV is in the
// decode worker's memory. Wire format: ucx_staged_protocol.h; decode side:
// ucx_staged_receiver.h.
//
// Host pools work the same way (plain buffers, memcpy): `ucx` (one-sided
// puts) is the better choice for them and what auto picks; `ucx_staged`
// on host pools is what CI, without a GPU, tests the protocol with.
//
// Threads: decode side, one progress thread per exported pool, the only
// thread that touches its UCX worker. Prefill side (ucx_staged_sender.h),
// one send worker (SERIALIZED) and one mutex that guards it, the staging
// slots, the peer cache and every in-flight chunk; every UCX call of the
// prefill side is made under that mutex, by two kinds of threads: the
// transfers' callers (queueing chunks and FINISH, pumping while they wait
// for a slot or in Finish) and the transport's send progress thread, which
// pumps once per lock hold while any chunk is in flight or any FINISH
// awaits its acknowledgement, and sleeps otherwise. So chunks move between
// SendLayer calls, while the forward pass computes, and a slot held by one
// transfer is released even while another waits for it.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/transport/kv_transport.h"
#include "common/transport/ucx_staged_receiver.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<KvTransport>> MakeUcxStagedTransport(const StagedOptions& options = {});

}  // namespace tandem
