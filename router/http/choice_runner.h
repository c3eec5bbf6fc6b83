// Runs the `n` sequences of one HTTP request, each a GenerateCall through
// GenerationServiceImpl::Serve (admission, placement, validation: the gRPC
// path's), on threads of its own, and hands their responses to the HTTP
// handler's thread in order of arrival.
//
// Threads: Serve blocks, so choice i runs on threads_[i]; its sink pushes
// into one queue that the handler's thread drains with Next(). The
// handler's thread alone calls Next() and Cancel(); the destructor cancels
// and joins, so every call has ended (and freed its KV) when it returns.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "router/generation_service.h"

namespace tandem::router::http {

class ChoiceRunner {
 public:
  struct Event {
    int index = 0;               // which choice
    bool done = false;           // the choice's call returned
    v1::GenerateResponse response;  // when !done
    grpc::Status status;         // when done
  };
  // `requests[i]` is choice i's request. `client_gone` is polled by the
  // calls' cancel watcher (any thread). `api_token`: the bearer token the
  // client sent (its tenant's cache salt, as on gRPC).
  ChoiceRunner(GenerationServiceImpl& service, std::vector<v1::GenerateRequest> requests,
               std::function<bool()> client_gone, std::string api_token = "");
  ~ChoiceRunner();
  ChoiceRunner(const ChoiceRunner&) = delete;
  ChoiceRunner& operator=(const ChoiceRunner&) = delete;

  // The next event, waiting up to `timeout`; nullopt when none came.
  std::optional<Event> Next(absl::Duration timeout);
  // True when every choice's call returned and Next() drained its events.
  bool finished() const;
  // Makes every call see its client gone (they stop and free their KV).
  void Cancel() { cancelled_ = true; }

 private:
  class QueueSink;
  void Push(Event e);

  GenerationServiceImpl& service_;
  std::vector<v1::GenerateRequest> requests_;
  std::function<bool()> client_gone_;
  const std::string api_token_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  int running_ = 0;  // calls not yet returned, guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace tandem::router::http
