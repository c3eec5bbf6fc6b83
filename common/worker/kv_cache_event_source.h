// The block events a worker sends the router (on its load reports) come
// from its KV cache manager: what entered and left the prefix cache since
// the last report, and the whole cached set when the router asks.
#pragma once

#include "common/kv/kv_cache_manager.h"
#include "common/rpc/worker_registration.h"

namespace tandem {

// `kv` must outlive the registration that uses the source (its thread
// calls it); both calls are thread-safe on the manager's side.
BlockEventSource KvCacheEventSource(KvCacheManager& kv);

}  // namespace tandem
