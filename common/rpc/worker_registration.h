// The worker side of joining a router: register once, then report load at
// the interval the router asks for, registering again whenever the router
// says it no longer knows us (it restarted, or expired us after a stall).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

// Owns one background thread. `load` is called from that thread and must
// be thread-safe with respect to the worker's own state.
class WorkerRegistration {
 public:
  WorkerRegistration(std::string router_address, v1::WorkerInfo info,
                     std::function<v1::LoadReport()> load);
  ~WorkerRegistration();  // Stop()

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
};

}  // namespace tandem
