#include "common/worker/kv_cache_event_source.h"

namespace tandem {

BlockEventSource KvCacheEventSource(KvCacheManager& kv) {
  BlockEventSource source;
  source.drain = [&kv](std::vector<BlockHash>* stored, std::vector<BlockHash>* removed) {
    KvCacheEvents events = kv.DrainCacheEvents();
    stored->insert(stored->end(), events.stored.begin(), events.stored.end());
    removed->insert(removed->end(), events.removed.begin(), events.removed.end());
  };
  source.cached = [&kv] { return kv.CachedBlockHashes(); };
  return source;
}

}  // namespace tandem
