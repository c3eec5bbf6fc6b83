// What a worker tells the router about its prefix cache: the content keys
// (BlockHash) of full KV blocks that entered or left its cache. The router's
// prefix index is fed by these (on the load report stream), so it can send
// a request where its prefix already is.
#pragma once

#include <vector>

#include "common/kv/block_hash.h"

namespace tandem {

// One batch of changes since the previous batch, netted per key so that a
// consumer that applies `removed` first and then `stored` ends up with
// exactly the set the worker holds:
//  - a key that was not cached at the start of the batch and is at its end
//    is in `stored`; one that was and no longer is, in `removed`;
//  - a key removed and stored again within the batch is in `stored` (it
//    is held);
//  - a key stored and evicted again within the batch is in `removed` (a
//    consumer may have seen it in a CachedBlockHashes() full set taken
//    in between; removing an unknown key must be harmless to it). Only if
//    nobody drained for so long that the log had to be compacted (more
//    entries than twice the pool) are such keys dropped.
// Each list is in the order the keys were first touched in the batch.
struct KvCacheEvents {
  std::vector<BlockHash> stored;
  std::vector<BlockHash> removed;
};

}  // namespace tandem
