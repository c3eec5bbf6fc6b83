#include "router/http/choice_runner.h"

namespace tandem::router::http {

class ChoiceRunner::QueueSink final : public GenerateSink {
 public:
  QueueSink(ChoiceRunner& runner, int index) : runner_(runner), index_(index) {}
  bool Write(const v1::GenerateResponse& resp) override {
    if (IsCancelled()) return false;
    Event e;
    e.index = index_;
    e.response = resp;
    runner_.Push(std::move(e));
    return true;
  }
  bool IsCancelled() const override { return runner_.cancelled_ || runner_.client_gone_(); }
  // HTTP clients set no deadline; the router's --worker_timeout_seconds
  // bounds every worker call.
  absl::Time deadline() const override { return absl::InfiniteFuture(); }
  std::string api_token() const override { return runner_.api_token_; }

 private:
  ChoiceRunner& runner_;
  const int index_;
};

ChoiceRunner::ChoiceRunner(GenerationServiceImpl& service, std::vector<v1::GenerateRequest> requests,
                           std::function<bool()> client_gone, std::string api_token)
    : service_(service),
      requests_(std::move(requests)),
      client_gone_(std::move(client_gone)),
      api_token_(std::move(api_token)) {
  running_ = static_cast<int>(requests_.size());
  for (int i = 0; i < static_cast<int>(requests_.size()); ++i) {
    threads_.emplace_back([this, i] {
      QueueSink sink(*this, i);
      Event e;
      e.index = i;
      e.done = true;
      e.status = service_.Serve(requests_[i], sink);
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(e));
      --running_;
      cv_.notify_all();
    });
  }
}

ChoiceRunner::~ChoiceRunner() {
  Cancel();
  for (std::thread& t : threads_) t.join();
}

void ChoiceRunner::Push(Event e) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
  cv_.notify_all();
}

std::optional<ChoiceRunner::Event> ChoiceRunner::Next(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return !events_.empty() || running_ == 0; });
  if (events_.empty()) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

bool ChoiceRunner::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_ == 0 && events_.empty();
}

}  // namespace tandem::router::http
