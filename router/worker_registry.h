// The router's view of its workers: who registered, their last load report,
// which are alive, and the load the router placed on each since its last
// report. Membership and liveness only: the scoring of candidates is
// PlacementPolicy's (router/placement_policy.h), which claims the worker it
// chooses through Claim.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem::router {

// A worker as placement sees it. `stub` is shared with in-flight calls, so
// it outlives the worker's removal from the registry.
struct WorkerView {
  std::string id;
  std::string address;
  v1::WorkerRole role = v1::WORKER_ROLE_UNSPECIFIED;
  v1::WorkerInfo info;
  v1::LoadReport load;
  // Requests the router has placed on it that the last report may not show.
  int32_t inflight = 0;
  // KV blocks (decode workers) or prompt tokens (prefill workers) placed.
  int64_t inflight_load = 0;
  // Set by PlacementPolicy on the view it returns: leading prompt blocks
  // the prefix index believes the worker caches (0 when not cache-aware).
  int32_t cached_prefix_blocks = 0;
  std::shared_ptr<v1::DecodeService::Stub> decode_stub;
  std::shared_ptr<v1::PrefillService::Stub> prefill_stub;
};

struct WorkerRegistryOptions {
  std::string model_name;
  // A worker that has not reported for this long is taken out of placement.
  absl::Duration liveness_timeout = absl::Seconds(5);
  absl::Duration report_interval = absl::Seconds(1);
  // Called (under the registry's lock: it must not call back into the
  // registry) with the id of every worker that leaves: expired, removed,
  // or replaced by a new registration at its address. The prefix index
  // forgets it.
  std::function<void(const std::string&)> on_removed;
};

// Thread-safe: gRPC handler threads register, report and place concurrently.
class WorkerRegistry {
 public:
  explicit WorkerRegistry(WorkerRegistryOptions options);

  // Returns the worker's id, unique to this registry. INVALID_ARGUMENT for
  // a bad role or address, FAILED_PRECONDITION when
  // the worker serves another model or its KV layout differs from workers
  // already registered. Re-registering an address replaces the old entry.
  absl::StatusOr<std::string> Register(const v1::WorkerInfo& info);
  // False when the id is unknown (the worker must register again).
  bool Report(const v1::LoadReport& report);
  // Takes a worker out of placement at once (it failed a call), with why.
  void Remove(const std::string& id, const std::string& reason);
  // Drops workers whose reports stopped; returns their ids.
  std::vector<std::string> ExpireStale(absl::Time now);

  // Runs `choose` over the live, not draining workers of `role` (in id
  // order) and claims the one whose position it returns: `load` (KV blocks
  // for decode and aggregated workers, prompt tokens for prefill workers)
  // and one request are added to its router-side load, undone by Done().
  // Atomic with respect to other claims. `choose`'s error is returned as is.
  using Chooser = absl::FunctionRef<absl::StatusOr<size_t>(std::span<const WorkerView* const>)>;
  absl::StatusOr<WorkerView> Claim(v1::WorkerRole role, int64_t load, Chooser choose);
  // The largest fraction of free KV (after what the router placed) among
  // live workers of `role`; -1 when there is none. Placement compares
  // aggregated and disaggregated capacity by it.
  double Headroom(v1::WorkerRole role) const;
  // Undoes the router-side accounting of a Claim().
  void Done(const std::string& id, int64_t load);

  std::vector<WorkerView> Snapshot() const;
  std::optional<WorkerView> Find(const std::string& id) const;
  int32_t CountLive(v1::WorkerRole role) const;
  const WorkerRegistryOptions& options() const { return options_; }

 private:
  struct Entry {
    WorkerView view;
    absl::Time last_seen;
  };
  const WorkerRegistryOptions options_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> workers_ ABSL_GUARDED_BY(mu_);
  int64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Random, per registry: ids are "<role>-<n>-<tag>", so a worker that
  // still reports under the id an earlier router (before a restart) gave
  // it is told it is unknown, never mistaken for the worker that got the
  // same number from this one.
  const std::string id_tag_;
};

}  // namespace tandem::router
