// Where a request runs: the scoring half of placement (the registry keeps
// membership, liveness and the router-side load accounting). Three modes:
//
//  - load: the decode (or aggregated) worker with the most free KV blocks,
//    the prefill worker with the fewest queued prompt tokens (tandem's
//    placement before prefix caching).
//  - cache_aware: the worker whose cost is least, in KV blocks:
//        prefix_weight * (blocks of the prompt it lacks)
//          + load_weight * (blocks of the prompt) * (its load fraction)
//    where a decode or aggregated worker's load fraction is the larger of
//    its KV pool's use and its batch's fill (a full worker costs as much as
//    computing the whole prompt), and a prefill worker's load is its queued
//    prompt tokens in blocks (load_weight * queued blocks). What a worker
//    lacks comes from the prefix index; a stale
//    worker lacks everything, so it competes on load only. A pair's cost
//    separates: the prefill worker computes the blocks it lacks and the
//    decode worker receives the blocks it lacks, so choosing the decode
//    worker and the prefill worker each by its own cost chooses the pair
//    that computes and moves the least.
//  - round_robin: the next worker of the role in id order that has room
//    (for comparisons).
//
// Thread-safe; each Pick claims the chosen worker's router-side load in
// the registry under the registry's lock, so two requests placed at once
// see each other. In cache_aware mode each Pick also tells the index that
// the chosen worker will hold the prompt's blocks (PrefixIndex::Predict),
// so a conversation's next turn finds them before the worker's events do.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/kv/block_hash.h"
#include "router/prefix_index.h"
#include "router/router_config.h"
#include "router/worker_registry.h"

namespace tandem::router {

struct PlacementOptions {
  PlacementMode mode = PlacementMode::kCacheAware;
  double prefix_weight = 1.0;
  double load_weight = 1.0;
};

// The placement flags of the router's config.
PlacementOptions PlacementOptionsFrom(const RouterConfig& config);

class PlacementPolicy {
 public:
  // `index` may be null: cache_aware then scores by load only.
  PlacementPolicy(PlacementOptions options, WorkerRegistry& registry, PrefixIndex* index);

  // A decode worker (or, with `role`, an aggregated one) that can hold
  // `blocks_needed`. `keys`: the prompt's full-block keys. RESOURCE_EXHAUSTED
  // with the reason when none has room; UNAVAILABLE when none is live.
  // Workers in `exclude` (they refused this request) are not chosen. The
  // view's cached_prefix_blocks says how many leading blocks the index
  // believes it holds.
  absl::StatusOr<WorkerView> PickDecode(std::span<const BlockHash> keys, int64_t blocks_needed,
                                        const std::vector<std::string>& exclude = {},
                                        v1::WorkerRole role = v1::WORKER_ROLE_DECODE);
  // A prefill worker for a prompt of `prompt_tokens` whose full blocks are `keys`.
  absl::StatusOr<WorkerView> PickPrefill(std::span<const BlockHash> keys, int64_t prompt_tokens);

  // Leading blocks of `keys` the best-placed live worker of `role` holds
  // (0 outside cache_aware): conditional disaggregation compares what is
  // left to compute with --local_prefill_max_tokens.
  int32_t BestCachedPrefix(std::span<const BlockHash> keys, v1::WorkerRole role) const;

  const PlacementOptions& options() const { return options_; }

 private:
  // Cached leading blocks per candidate (all 0 unless cache_aware).
  std::vector<int32_t> Matches(std::span<const BlockHash> keys, std::span<const WorkerView* const> candidates) const;

  const PlacementOptions options_;
  WorkerRegistry& registry_;
  // Notes that `worker` will hold `keys` (cache_aware with an index only).
  void Predict(const WorkerView& worker, std::span<const BlockHash> keys);

  PrefixIndex* index_;
  std::atomic<uint64_t> round_robin_{0};
};

}  // namespace tandem::router
