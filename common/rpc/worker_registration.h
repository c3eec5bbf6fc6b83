// The worker side of joining a router: register once, then report load at
// the interval the router asks for, registering again whenever the router
// says it no longer knows us (it restarted, or expired us after a stall).
// A worker with a prefix cache also sends its block events on every
// report (KvBlockEvents): the keys stored and removed since the last one,
// numbered, or its whole cached set after each registration, after a
// report that may not have arrived, and when the router asks for it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/kv/block_hash.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

// Where a worker's block events come from (its KvCacheManager). Both are
// called from the registration thread and must be thread-safe.
struct BlockEventSource {
  // Appends the keys stored and removed since the previous call; the
  // source forgets them.
  std::function<void(std::vector<BlockHash>* stored, std::vector<BlockHash>* removed)> drain;
  // Every key cached now.
  std::function<std::vector<BlockHash>()> cached;
};

// Owns one background thread. `load` is called from that thread and must
// be thread-safe with respect to the worker's own state.
class WorkerRegistration {
 public:
  WorkerRegistration(std::string router_address, v1::WorkerInfo info,
                     std::function<v1::LoadReport()> load);
  ~WorkerRegistration();  // Stop()

  // Before Start(): publish block events from `source` on every report.
  void SetBlockEventSource(BlockEventSource source);
  // Before Start(): `lost` is called, on the registration thread, with the
  // instance id of a router this worker no longer reports to: a report to
  // it was refused (UNAVAILABLE: no process on its port), it answered
  // "unknown worker" and a registration with another instance followed,
  // or the worker registered with another instance. At most once per
  // instance registered with; a slow report (DEADLINE_EXCEEDED) is not a
  // loss. The decode worker frees that router's unclaimed reservations.
  void SetRouterLostCallback(std::function<void(const std::string& router_instance)> lost);
  void Start();
  // Sends one last report (e.g. draining) promptly.
  void ReportNow();
  void Stop();

  // Empty until the first registration succeeded.
  std::string worker_id() const;
  bool registered() const { return registered_.load(); }

 private:
  void Loop();
  bool Register();
  // Calls router_lost_ for the instance registered with, once.
  void LoseRouter(const char* why);
  // Adds this report's batch: the full set when resync_, else a delta.
  void AddBlockEvents(v1::LoadReport* report);

  const std::string router_address_;
  const v1::WorkerInfo info_;
  const std::function<v1::LoadReport()> load_;
  std::unique_ptr<v1::WorkerRegistry::Stub> stub_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool report_now_ = false;
  std::string worker_id_;
  double interval_seconds_ = 1.0;
  std::atomic<bool> registered_{false};
  // Registration thread only (set before Start).
  BlockEventSource block_events_;
  uint64_t block_event_sequence_ = 0;
  bool block_events_resync_ = true;
  std::function<void(const std::string&)> router_lost_;
  // The instance of the last successful registration; empty once lost.
  std::string router_instance_;
};

}  // namespace tandem
