// KvTransport over UCX one-sided puts (host memory): the decode worker maps
// its pool and publishes the remote key; the prefill worker writes each
// layer's blocks straight into the reserved destination blocks
// (ucp_put_nbx) and flushes the endpoint before reporting the prefill done.
// Debian's UCX picks shared memory / CMA on one host and TCP or InfiniBand
// across hosts (UCX_TLS selects). Host pools only: this UCX build has no
// CUDA memory support, so pools with on_device() are refused.
//
// Threads: the decode side runs one progress thread per transport (needed
// where puts are emulated with messages, as over TCP); the prefill side
// drives its own worker from the calling thread under a mutex.
#pragma once

#include "absl/status/statusor.h"
#include "common/transport/kv_transport.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<KvTransport>> MakeUcxTransport();

}  // namespace tandem
