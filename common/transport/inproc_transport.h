// KvTransport between pools in one process (unit tests, single-process
// setups): a memcpy per block, with the same handshake as the real ones.
#pragma once

#include "common/transport/kv_transport.h"

namespace tandem {

std::unique_ptr<KvTransport> MakeInProcessTransport();

}  // namespace tandem
