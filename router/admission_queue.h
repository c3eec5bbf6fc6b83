// The router's door: a request runs when fewer than the in-flight limit
// are running; otherwise it waits in a bounded queue, served by priority
// (higher first), then the earliest TTFT deadline (SloHints), then arrival.
// It is refused only when the queue is full or when its own deadline cannot
// be met given the queue ahead of it, and the message says which.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tandem::router {

struct AdmissionOptions {
  // Requests running at once; evaluated at every admission, so it can follow
  // the workers' capacity as they come and go.
  std::function<int32_t()> max_running;
  int32_t max_queued = 4096;
  // How often a queued request checks its client and deadline. Every
  // queued request wakes at this rate and takes the one queue lock, and
  // each wake re-evaluates max_running (a snapshot of the worker registry):
  // at 20 ms, a burst of 1000 requests (~500 queued) made ~25k such wakes a
  // second on a 2-core box. A queued request's cancel is noticed this late.
  absl::Duration poll = absl::Milliseconds(200);
};

// Thread-safe: every Generate handler thread enters and leaves it.
class AdmissionQueue {
 public:
  explicit AdmissionQueue(AdmissionOptions options);

  // Frees the running slot when it goes.
  class Ticket {
   public:
    Ticket() = default;
    explicit Ticket(AdmissionQueue* q) : q_(q) {}
    Ticket(Ticket&& o) noexcept : q_(std::exchange(o.q_, nullptr)) {}
    Ticket& operator=(Ticket&& o) noexcept {
      if (this != &o) {
        Release();
        q_ = std::exchange(o.q_, nullptr);
      }
      return *this;
    }
    ~Ticket() { Release(); }
    void Release() {
      if (q_ != nullptr) std::exchange(q_, nullptr)->Leave();
    }

   private:
    AdmissionQueue* q_ = nullptr;
  };

  struct Request {
    int32_t priority = 0;
    absl::Time ttft_deadline = absl::InfiniteFuture();  // orders the queue
    absl::Time deadline = absl::InfiniteFuture();       // the call's own: refuses or ends the wait
    std::function<bool()> client_gone;                  // polled while queued; may be empty
  };

  // Blocks until `r` may run. RESOURCE_EXHAUSTED: the queue is full, or the
  // deadline cannot be met (the estimate of the wait, from the recent
  // completion rate, ends past it by a margin). DEADLINE_EXCEEDED: it passed while
  // queued. CANCELLED: the client went away while queued.
  absl::StatusOr<Ticket> Enter(const Request& r);

  int32_t running() const;
  int32_t queued() const;
  // Requests completed per second, recently (0 until a few completed).
  double completion_rate() const;

 private:
  struct Waiter {
    int32_t priority;
    absl::Time ttft_deadline;
    uint64_t arrival;
    bool admitted = false;
    std::condition_variable cv;
  };
  struct Before {
    bool operator()(const Waiter* a, const Waiter* b) const {
      if (a->priority != b->priority) return a->priority > b->priority;
      if (a->ttft_deadline != b->ttft_deadline) return a->ttft_deadline < b->ttft_deadline;
      return a->arrival < b->arrival;
    }
  };
  void Leave();
  // Admits waiters from the head while slots are free. Holds mu_.
  void AdmitLocked();
  int32_t LimitLocked() const;

  const AdmissionOptions options_;
  mutable std::mutex mu_;
  int32_t running_ = 0;
  uint64_t next_arrival_ = 0;
  std::set<Waiter*, Before> waiting_;
  // Completion rate: an exponentially weighted mean of the gaps between
  // completions.
  absl::Time last_completion_ = absl::InfinitePast();
  double mean_gap_seconds_ = 0;
  int64_t completions_ = 0;
};

}  // namespace tandem::router
