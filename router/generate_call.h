// One Generate request's life in the router: validate and tokenize, reserve
// KV on a decode worker, prefill on a prefill worker (its first token goes
// to the client at once), then relay the decode worker's token stream.
// Text (detokenization, stop strings) is made here, so workers deal in ids.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "common/sampling/sampling_params.h"
#include "common/sampling/stop_checker.h"
#include "common/tokenizer/tokenizer.h"
#include "router/generation_service.h"

namespace tandem::router {

// Cancels the downstream call in progress when the client cancels (or its
// deadline passes): the sync gRPC API has no callback for that, so a small
// thread watches the server context.
class DownstreamCanceller {
 public:
  explicit DownstreamCanceller(grpc::ServerContext* server);
  ~DownstreamCanceller();
  void Attach(grpc::ClientContext* client);
  void Detach();
  bool client_gone() const;

 private:
  grpc::ServerContext* server_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  grpc::ClientContext* active_ = nullptr;
  bool stop_ = false;
  bool gone_ = false;
  std::thread thread_;
};

class GenerateCall {
 public:
  GenerateCall(RouterContext& router, grpc::ServerContext* ctx, const v1::GenerateRequest& req,
               grpc::ServerWriter<v1::GenerateResponse>* writer);
  grpc::Status Run();
  // Counts the request's outcome and, when it succeeded, its latencies and
  // SLO attainment.
  void RecordOutcome(const grpc::Status& status);

 private:
  struct Placement {
    WorkerView decode;
    v1::ReserveKvResponse reservation;
  };
  absl::Status Prepare();
  absl::StatusOr<Placement> Reserve();
  void Release(const Placement& p);
  // Sets a downstream call's deadline from the client's.
  void SetDeadline(grpc::ClientContext* c) const;
  // Runs the token through the detokenizer and stop checker and adds it to
  // `resp`; true when the request is finished.
  bool AddToken(const v1::GeneratedToken& token, v1::GenerateResponse* resp);
  void Finish(v1::GenerateResponse* resp);
  // The status for a failed downstream call, naming the worker; takes a dead
  // worker out of placement.
  grpc::Status WorkerFailure(const WorkerView& w, const std::string& what, const grpc::Status& s);

  RouterContext& router_;
  grpc::ServerContext* ctx_;
  const v1::GenerateRequest& req_;
  grpc::ServerWriter<v1::GenerateResponse>* writer_;
  DownstreamCanceller canceller_;

  std::string request_id_;
  std::vector<int32_t> prompt_;
  SamplingParams sampling_;
  StoppingParams stopping_;
  uint64_t seed_ = 0;
  bool return_text_ = true;
  std::optional<IncrementalDetokenizer> detokenizer_;
  std::optional<StopChecker> stop_;
  StopDecision last_decision_;
  int32_t completion_tokens_ = 0;

  absl::Time arrival_;
  absl::Time first_token_time_;
  absl::Time last_token_time_;
  absl::Time end_time_;
  double queue_seconds_ = 0, prefill_seconds_ = 0, transfer_seconds_ = 0;
  std::string prefill_worker_, decode_worker_;
};

}  // namespace tandem::router
