// The decode side of the NCCL KV transport (nccl_transport.h): per
// prefill worker a pair with its communicator (rank 1), stream and thread.
// The thread joins ncclCommInitRank when a request brings a new unique id,
// posts each queued transfer's receives (all layers, in queue order),
// then watches the in-flight transfers' events, the communicator's async
// error and their deadlines. A failure aborts the communicator and fails
// every transfer of the pair through on_failed (the decode worker frees
// their reservations). With a write gate, each accepted transfer pins its
// reservation from Accept until its receives completed or were aborted,
// so a reservation released meanwhile keeps its blocks until nothing can
// write them.
#pragma once

#include <condition_variable>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <string>

#include "common/kv/kv_layout.h"
#include "common/engine/model_backend.h"
#include "common/transport/kv_transport.h"
#include "common/transport/nccl_ops.h"
#include "common/transport/nccl_transport.h"

namespace tandem {

class NcclReceiver {
 public:
  // `gate`, if not null, must outlive the receiver.
  NcclReceiver(std::shared_ptr<NcclOps> ops, KvPoolView& pool, int device, NcclTransportOptions options,
               KvWriteGate* gate = nullptr);
  ~NcclReceiver();  // aborts what is in flight and joins the threads

  // Validates (nccl_protocol.h) and queues; returns before any NCCL call.
  absl::Status Accept(const v1::NcclTransferRequest& req, const std::vector<int32_t>& reserved,
                      KvReceiver::ReceiveFailed on_failed);
  absl::Status WaitReceived(std::string_view transfer_id, absl::Time deadline);
  size_t live_pairs() const;

 private:
  struct Pair;
  struct Job;
  void Run(Pair* p);
  void Finish(const std::string& transfer_id, absl::Status s);
  absl::Status Post(Pair* p, Job& job);
  void FailAll(Pair* p, std::unique_lock<std::mutex>& lock, const absl::Status& s);

  const std::shared_ptr<NcclOps> ops_;
  KvPoolView& pool_;
  const int device_;
  const NcclTransportOptions options_;
  KvWriteGate* const gate_;
  uint64_t stride_ = 0;

  mutable std::mutex mu_;  // pairs_ and results_
  std::condition_variable results_cv_;
  std::map<std::string, std::unique_ptr<Pair>> pairs_;
  // Transfer id -> outcome, kept until WaitReceived or ten minutes. A
  // transfer retried under the same id (the prefill loop's one-at-a-time
  // fallback) is pending once per request: done when all are, failed when
  // one failed (its reservation is already freed by on_failed).
  struct Result {
    int pending = 0;
    std::optional<absl::Status> status;
    absl::Time at;
  };
  std::map<std::string, Result> results_;
};

}  // namespace tandem
