// One Generate request's life in the router: validate and tokenize, reserve
// KV on a decode worker, prefill on a prefill worker (its first token goes
// to the client at once), then relay the decode worker's token stream.
// Text (detokenization, stop strings) is made here, so workers deal in ids.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "common/kv/block_hash.h"
#include "common/sampling/sampling_params.h"
#include "common/sampling/stop_checker.h"
#include "common/tokenizer/tokenizer.h"
#include "router/generate_sink.h"
#include "router/generation_service.h"

namespace tandem::router {

// Cancels the downstream call in progress when the client cancels (or its
// deadline passes): neither the sync gRPC API nor the HTTP server has a
// callback for that, so one process-wide watcher thread polls every live
// canceller's sink
// (a thread per request was a thousand threads waking 100 times a second
// under a burst).
class DownstreamCanceller {
 public:
  explicit DownstreamCanceller(const GenerateSink* client);
  ~DownstreamCanceller();
  void Attach(grpc::ClientContext* client);
  void Detach();
  bool client_gone() const;
  // The watcher's check: marks the client gone and cancels the active
  // downstream call once the sink says the client is gone.
  void Poll();

 private:
  const GenerateSink* client_;
  mutable std::mutex mu_;
  grpc::ClientContext* active_ = nullptr;
  bool gone_ = false;
};

class GenerateCall {
 public:
  // `arrival`: when the router received it (before any wait in the
  // admission queue), where TTFT is counted from.
  // Responses go to `sink` (gRPC stream or HTTP), which outlives the call.
  GenerateCall(RouterContext& router, GenerateSink& sink, const v1::GenerateRequest& req,
               absl::Time arrival = absl::Now());
  grpc::Status Run();
  // Counts the request's outcome and, when it succeeded, its latencies and
  // SLO attainment.
  void RecordOutcome(const grpc::Status& status);

 private:
  struct Placement {
    WorkerView decode;
    v1::ReserveKvResponse reservation;
    // The prefill call (and so the transfer) must end by then: the lease
    // on the reservation runs out kLeaseSlack later.
    absl::Time prefill_by;
  };
  // Where a worker computes the prompt itself: an aggregated worker (when
  // they have more KV headroom than the decode workers, or no
  // disaggregated pair is live), or a decode worker for a prompt under
  // --local_prefill_max_tokens or when no prefill worker is live. nullopt:
  // the disaggregated path.
  absl::StatusOr<std::optional<WorkerView>> PlaceLocal();
  // Notes where the prompt is computed: the leading blocks that worker was
  // predicted to cache (placement metrics, TTFT by hit or miss).
  void RecordPlaced(int32_t cached_blocks);
  grpc::Status RunLocal(const WorkerView& worker);
  // Streams `dr`'s tokens from `worker` to the client through this
  // request's text state; `release` frees what the request still holds on
  // the worker when the call ends without a claim.
  grpc::Status Relay(const WorkerView& worker, const v1::DecodeRequest& dr, const std::function<void()>& release);
  absl::Status Prepare();
  // On success the caller owns the reservation and must Release it on
  // every exit that does not hand it to Decode. On failure nothing is held
  // (a reservation the worker may have made anyway is released here).
  absl::StatusOr<Placement> Reserve();
  // Idempotent on the worker; a reservation it never made is a no-op.
  void Release(const WorkerView& decode, const std::string& transfer_id);
  void Release(const Placement& p) { Release(p.decode, p.reservation.transfer_id()); }
  // When a downstream call must end: the client's deadline, capped by
  // --worker_timeout_seconds from now, and by `bound` when given.
  absl::Time CallDeadline(absl::Time bound = absl::InfiniteFuture()) const;
  // Runs the token through the detokenizer and stop checker and adds it to
  // `resp`; true when the request is finished.
  bool AddToken(const v1::GeneratedToken& token, v1::GenerateResponse* resp);
  void Finish(v1::GenerateResponse* resp);
  // The client's status for a failed downstream call: DEADLINE_EXCEEDED or
  // CANCELLED when the client's deadline passed or it went away, else the
  // worker's code with a message that names no address (the worker's own
  // message, which may, is logged). A worker leaves placement only when a
  // liveness probe finds it unreachable, never for one request's failure.
  grpc::Status WorkerFailure(const WorkerView& w, const std::string& what, const grpc::Status& s);
  // True when `w` answers a GetLoad within a short deadline (or is merely
  // slow); false when its connection is refused or reset.
  bool WorkerReachable(const WorkerView& w) const;

  RouterContext& router_;
  GenerateSink& sink_;
  const v1::GenerateRequest& req_;
  DownstreamCanceller canceller_;

  std::string request_id_;
  // When the client's call ends (InfiniteFuture without a deadline).
  absl::Time client_deadline_;
  // Set once Reserve picked it: the router, not the worker, names the
  // reservation, so it can release one whose response it never received.
  std::string transfer_id_;
  std::vector<int32_t> prompt_;
  SamplingParams sampling_;
  StoppingParams stopping_;
  uint64_t seed_ = 0;
  bool return_text_ = true;
  std::optional<IncrementalDetokenizer> detokenizer_;
  std::optional<StopChecker> stop_;
  StopDecision last_decision_;
  int32_t completion_tokens_ = 0;
  int64_t local_blocks_ = 0;  // placed on a local-prefill worker, for Done()
  // The prompt's full-block keys (set by PlaceLocal, before any placement)
  // and the prompt tokens the computing worker was predicted to have cached.
  std::vector<BlockHash> prompt_keys_;
  // The effective cache salt (common/request/cache_salt.h): the root of
  // prompt_keys_, and what the workers cache this request's blocks under.
  std::string cache_salt_;
  int32_t block_size_ = 16;
  int64_t predicted_hit_tokens_ = 0;

  absl::Time arrival_;
  absl::Time first_token_time_;
  absl::Time last_token_time_;
  absl::Time end_time_;
  double queue_seconds_ = 0, prefill_seconds_ = 0, transfer_seconds_ = 0;
  std::string prefill_worker_, decode_worker_;
};

}  // namespace tandem::router
