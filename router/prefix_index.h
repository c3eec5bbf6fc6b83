// The router's map of which worker caches which KV block: block key ->
// workers holding it, fed by the block events workers send on their load
// reports (KvBlockEvents in worker.proto). Placement asks it, per worker,
// for the longest cached prefix of a request's block keys.
//
// Keys chain (a block's key covers every token before it), so a prefix
// match is a walk over the request's keys from the first: a worker's match
// ends at the first key it does not hold.
//
// Per worker the index is in step or not: in step after a full set, and
// while every delta carries the next sequence number; a gap (a report lost,
// a batch out of order) or a worker not yet resynced (a new registration,
// a router restart) puts it out of step until its next full set, which the
// router asks for in the report's response. A worker out of step, or whose
// last batch is older than `stale_after`, is stale: placement scores it by
// load only.
//
// Events trail the work by up to a report interval, and a conversation's
// next turn often comes sooner. So the router also predicts: the prompt
// blocks of a request it placed count as held by that worker (Predict)
// until the worker's events confirm or remove them, or `predicted_ttl`
// passes without either (the request failed, or was never cached).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/kv/block_hash.h"
#include "tandem/v1/worker.pb.h"

namespace tandem::router {

// Thread-safe: report handlers apply events while request threads match.
class PrefixIndex {
 public:
  PrefixIndex(absl::Duration stale_after, absl::Duration predicted_ttl);

  // Applies one report's batch from `worker`. Returns true when the router
  // must ask the worker for its full set (gap, or not in step yet); the
  // batch is then not applied.
  bool Apply(const std::string& worker, const v1::KvBlockEvents& events, absl::Time now);
  // Forgets a worker (it left placement, or registered again under a new id).
  void RemoveWorker(const std::string& worker);
  // The router placed a prompt whose full-block keys are `keys` on
  // `worker` (in step only: a stale worker's matches are not used anyway).
  void Predict(const std::string& worker, std::span<const BlockHash> keys, absl::Time now);

  // Per worker in `workers`, the number of leading keys of `keys` it holds
  // (0 for a stale or unknown worker), in the order of `workers`.
  std::vector<int32_t> MatchPrefix(std::span<const BlockHash> keys, std::span<const std::string> workers,
                                   absl::Time now) const;
  // In step and fresh at `now`.
  bool Fresh(const std::string& worker, absl::Time now) const;

  // For tests and logs.
  size_t NumKeys() const;
  size_t NumKeysOf(const std::string& worker) const;  // confirmed by events
  size_t NumPredictedOf(const std::string& worker) const;

 private:
  using Slot = uint32_t;  // a worker's dense number, so a key's holders are small
  struct WorkerState {
    Slot slot = 0;
    bool in_step = false;
    uint64_t next_sequence = 0;
    absl::Time last_batch = absl::InfinitePast();
    absl::flat_hash_set<BlockHash> keys;
    // Predicted, not confirmed yet: key -> when the prediction lapses.
    absl::flat_hash_map<BlockHash, absl::Time> predicted;
  };
  bool FreshLocked(const WorkerState& w, absl::Time now) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void AddKey(WorkerState& w, const BlockHash& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RemoveKey(WorkerState& w, const BlockHash& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ClearKeys(WorkerState& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Unpredict(WorkerState& w, const BlockHash& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops `w`'s predictions that lapsed by `now` (all of them with InfiniteFuture).
  void LapsePredictions(WorkerState& w, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const absl::Duration stale_after_;
  const absl::Duration predicted_ttl_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, WorkerState> workers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<BlockHash, absl::InlinedVector<Slot, 4>> holders_ ABSL_GUARDED_BY(mu_);
  // The same for predictions, each with its lapse time.
  absl::flat_hash_map<BlockHash, absl::InlinedVector<std::pair<Slot, absl::Time>, 2>> predicted_ ABSL_GUARDED_BY(mu_);
  Slot next_slot_ ABSL_GUARDED_BY(mu_) = 0;
};

// The proto form of a key and back.
BlockHash BlockKeyFromProto(const v1::BlockKey& key);
void BlockKeyToProto(const BlockHash& key, v1::BlockKey* out);

}  // namespace tandem::router
