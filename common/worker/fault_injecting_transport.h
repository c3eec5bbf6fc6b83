// A KvTransport that fails a fraction of its transfers on purpose
// (--fault_transfer_failure_rate, common/worker/fault_injector.h). The
// transfer chosen to fail still runs in full underneath and its Finish
// waits for the real copies, so the injected failure takes the path a real
// late or failed transfer takes (the router releases the reservation while
// no copy into it is in flight) without leaving anything half-written.
#pragma once

#include <memory>

#include "common/transport/kv_transport.h"
#include "common/worker/fault_injector.h"

namespace tandem {

// `faults` must outlive the transport. With a rate of 0 it returns `inner`.
std::unique_ptr<KvTransport> MakeFaultInjectingTransport(std::unique_ptr<KvTransport> inner, FaultInjector& faults);

}  // namespace tandem
