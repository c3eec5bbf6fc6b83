#include "router/admission_queue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tandem::router {
namespace {

constexpr int64_t kMinCompletionsForEstimate = 32;
constexpr double kEstimateMargin = 1.5;

}  // namespace

AdmissionQueue::AdmissionQueue(AdmissionOptions options) : options_(std::move(options)) {}

int32_t AdmissionQueue::LimitLocked() const {
  return std::max<int32_t>(1, options_.max_running ? options_.max_running() : 1);
}

void AdmissionQueue::AdmitLocked() {
  const int32_t limit = LimitLocked();
  while (running_ < limit && !waiting_.empty()) {
    Waiter* w = *waiting_.begin();
    waiting_.erase(waiting_.begin());
    w->admitted = true;
    ++running_;
    w->cv.notify_one();
  }
}

absl::StatusOr<AdmissionQueue::Ticket> AdmissionQueue::Enter(const Request& r) {
  std::unique_lock<std::mutex> lock(mu_);
  if (waiting_.empty() && running_ < LimitLocked()) {
    ++running_;
    return Ticket(this);
  }
  if (static_cast<int32_t>(waiting_.size()) >= options_.max_queued) {
    return absl::ResourceExhaustedError(absl::StrCat("the router's queue is full (", waiting_.size(),
                                                     " requests waiting, ", running_, " running)"));
  }
  Waiter w{r.priority, r.ttft_deadline, next_arrival_++};
  // Those it would wait behind: everyone queued before it in service order.
  int64_t ahead = 0;
  for (const Waiter* o : waiting_) {
    if (Before()(o, &w)) ++ahead;
  }
  // Refused only on clear evidence: a rate from enough completions, and a
  // wait estimate well past the deadline (a burst's first completions are
  // slower than its steady rate, and refusing a request that would have
  // finished is worse than a late one timing out in the queue).
  if (r.deadline != absl::InfiniteFuture() && completions_ >= kMinCompletionsForEstimate && mean_gap_seconds_ > 0) {
    const absl::Duration wait = absl::Seconds(static_cast<double>(ahead + 1) * mean_gap_seconds_);
    if (absl::Now() + wait / kEstimateMargin > r.deadline) {
      return absl::ResourceExhaustedError(absl::StrFormat(
          "the request's deadline cannot be met: %d requests are queued ahead of it and the router completes "
          "%.1f per second (about %.2f s of waiting, %.2f s of deadline left)",
          ahead, 1.0 / mean_gap_seconds_, absl::ToDoubleSeconds(wait),
          std::max(0.0, absl::ToDoubleSeconds(r.deadline - absl::Now()))));
    }
  }
  waiting_.insert(&w);
  for (;;) {
    w.cv.wait_for(lock, absl::ToChronoNanoseconds(options_.poll), [&] { return w.admitted; });
    if (w.admitted) return Ticket(this);
    // Poll without the lock held: client_gone reads gRPC state.
    lock.unlock();
    const bool gone = r.client_gone && r.client_gone();
    const bool late = absl::Now() >= r.deadline;
    lock.lock();
    if (w.admitted) return Ticket(this);  // admitted meanwhile: run it (it will see its own state)
    if (gone || late) {
      waiting_.erase(&w);
      if (late) return absl::DeadlineExceededError("the request's deadline passed while it was queued");
      return absl::CancelledError("cancelled by the client while queued");
    }
    // The limit may have grown (a worker registered) with nobody leaving.
    AdmitLocked();
  }
}

void AdmissionQueue::Leave() {
  std::lock_guard<std::mutex> lock(mu_);
  --running_;
  const absl::Time now = absl::Now();
  if (last_completion_ != absl::InfinitePast()) {
    const double gap = absl::ToDoubleSeconds(now - last_completion_);
    mean_gap_seconds_ = completions_ <= 1 ? gap : 0.95 * mean_gap_seconds_ + 0.05 * gap;
  }
  last_completion_ = now;
  ++completions_;
  AdmitLocked();
}

int32_t AdmissionQueue::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

int32_t AdmissionQueue::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int32_t>(waiting_.size());
}

double AdmissionQueue::completion_rate() const {
  std::lock_guard<std::mutex> lock(mu_);
  return completions_ >= kMinCompletionsForEstimate && mean_gap_seconds_ > 0 ? 1.0 / mean_gap_seconds_ : 0.0;
}

}  // namespace tandem::router
