// The decode side of DecodeService.HoldKvWrite: a prefill worker that
// writes a reservation's blocks itself (one-sided transports: UCX puts,
// CUDA IPC copies) holds a pin on that reservation for as long as it may
// write, so that a reservation released meanwhile (the router's cancel or
// deadline, a lost router) keeps its blocks until the writes are over and
// never hands them to another sequence while a late put can still land.
//
// One hold is one gRPC stream: the first request pins (KvWriteGate::
// PinForWrite, refused NOT_FOUND / PERMISSION_DENIED as for any write),
// the answer grants, and the pin goes when the stream ends for any reason:
// the prefill worker half-closes after its transfer ended, its process
// died (the connection breaks), the server shuts down, or the hold reached
// `max_hold` (a hung prefill worker cannot pin forever; the watchdog
// thread cancels the call).
//
// Threads: Serve runs on gRPC handler threads, one per open hold, blocked
// in the stream's Read; the watchdog thread only cancels calls of holds
// past their maximum, under the lock, while their handler is still in
// Serve (it unregisters before it returns, so the ServerContext is alive).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/metrics/metrics_server.h"
#include "decode_worker/kv_reservations.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

class KvWriteHolds {
 public:
  static constexpr absl::Duration kDefaultMaxHold = absl::Seconds(60);

  // `reservations` (the write gate) must outlive this.
  explicit KvWriteHolds(KvReservations& reservations, absl::Duration max_hold = kDefaultMaxHold);
  ~KvWriteHolds();  // joins the watchdog; every Serve must have returned
  KvWriteHolds(const KvWriteHolds&) = delete;
  KvWriteHolds& operator=(const KvWriteHolds&) = delete;

  // Before serving: the longest a hold may last, and (optional) where
  // tandem_kv_write_holds_total{outcome}, tandem_kv_write_holds_active and
  // tandem_kv_write_holds_outlived_release_total are published.
  void set_max_hold(absl::Duration max_hold) { max_hold_ = max_hold; }
  void SetMetrics(MetricsServer& server);

  // One HoldKvWrite call, from its first request to its end. OK when the
  // prefill worker ended it; the refusal (NOT_FOUND, PERMISSION_DENIED,
  // INVALID_ARGUMENT) otherwise; DEADLINE_EXCEEDED when max_hold ended it.
  grpc::Status Serve(grpc::ServerContext* ctx,
                     grpc::ServerReaderWriterInterface<v1::KvWriteHoldResponse, v1::KvWriteHoldRequest>* stream);

  // Holds granted and not yet ended.
  int active() const;
  // Holds whose reservation was released or expired while they held it
  // (its blocks went back only at the hold's end): the case holds exist for.
  int64_t outlived_release() const { return outlived_release_.load(); }

 private:
  struct Watched {
    absl::Time expires;
    bool expired = false;  // the watchdog cancelled the call
  };
  // Returns whether the watchdog expired `ctx`'s hold.
  bool Unwatch(grpc::ServerContext* ctx);
  void Watchdog();

  KvReservations& reservations_;
  absl::Duration max_hold_;  // set before serving
  prometheus::Counter* granted_ = nullptr;   // set before serving; may stay null
  prometheus::Counter* refused_ = nullptr;
  prometheus::Counter* expired_ = nullptr;
  prometheus::Gauge* active_gauge_ = nullptr;
  prometheus::Counter* outlived_release_counter_ = nullptr;
  std::atomic<int64_t> outlived_release_{0};

  mutable absl::Mutex mu_;
  absl::flat_hash_map<grpc::ServerContext*, Watched> watched_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool rescan_ ABSL_GUARDED_BY(mu_) = false;  // a hold was added since the watchdog's last scan
  std::thread watchdog_;
};

}  // namespace tandem
