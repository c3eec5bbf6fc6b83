// The prefill worker's scheduling thread: plans steps with the shared
// Scheduler (prompts in chunks under a token budget, several prompts per
// step, service order by priority then deadline), runs them, samples each
// prompt's first token with its last chunk, and ships each prompt's KV to
// its decode worker layer by layer while the last chunk's later layers
// still compute (KvTransfer::SendLayer from the on_layer_done hook; the
// earlier chunks' KV is already in the pool and goes with each layer).
// The local KV blocks are scratch: freed as soon as the transfer is done.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/engine/engine.h"
#include "common/engine/scheduler.h"
#include "common/metrics/serving_metrics.h"
#include "common/transport/kv_transport.h"
#include "prefill_worker/kv_write_hold.h"
#include "prefill_worker/transfer_counter.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

struct PrefillResult {
  absl::Status status;
  SampleResult first_token;
  double queue_seconds = 0;
  double prefill_seconds = 0;
  double transfer_seconds = 0;  // after the last layer computed, until the KV landed
  int64_t kv_bytes = 0;
  std::string kv_completion;    // KvTransfer::completion, for the decode worker
};

// Shared by the gRPC handler (waits, may cancel) and the loop (completes).
class PrefillJob {
 public:
  std::string request_id;
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  uint64_t seed = 0;
  int32_t priority = 0;
  // The effective cache salt (PrefillRequest.cache_salt): the prompt's
  // cached prefix under it is not computed again.
  std::string cache_salt;
  // The destination's first destination.num_cached_blocks() blocks already
  // hold the prompt's KV there; only the later ones are shipped.
  v1::ReserveKvResponse destination;
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time enqueued;

  void Complete(PrefillResult r);
  // The result, or nullopt if not done within `timeout`.
  std::optional<PrefillResult> Wait(absl::Duration timeout);
  // A cancelled job is dropped before the loop's next step, between two of
  // its chunks too: its transfer is abandoned and its blocks freed.
  void Cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<PrefillResult> result_;
  std::atomic<bool> cancelled_{false};
};

struct PrefillLoopStats {
  int32_t queued = 0;
  int64_t queued_tokens = 0;
  int32_t running = 0;
};

class PrefillLoop {
 public:
  // `options`: the step's token budget and chunking (reserve_whole is
  // forced on: a transfer names all its source blocks when it starts).
  // `metrics` and `transfers` may be null (tests).
  PrefillLoop(Engine& engine, KvTransport& transport, KvEndpointInfo self, SchedulerOptions options,
              PrefillMetrics* metrics = nullptr, TransferCounter* transfers = nullptr);
  ~PrefillLoop();
  // Before Start(): the id peers see in handshake messages (our address).
  void set_worker_id(std::string id) { self_.worker_id = std::move(id); }
  // Before Start(): how long a transfer's Finish waits for the decode side
  // to confirm its writes (KvTransferSpec::finish_timeout; default none).
  void set_transfer_finish_timeout(absl::Duration timeout) { transfer_finish_timeout_ = timeout; }
  // Before Start(): opens the KV write holds of one-sided transfers (UCX
  // puts, CUDA IPC copies) on their decode workers (kv_write_hold.h);
  // null (tests with in-process transports): no holds.
  void set_write_holder(KvWriteHolder* holder) { write_holder_ = holder; }
  void Start();
  // Fails queued jobs with UNAVAILABLE and joins the thread.
  void Stop();

  void Submit(std::shared_ptr<PrefillJob> job);
  PrefillLoopStats stats() const;

 private:
  // A job from the moment the loop takes it until it completes.
  struct Active {
    std::shared_ptr<PrefillJob> job;
    absl::Time first_chunk = absl::InfinitePast();  // unset until planned
    // Opened when the prompt is first planned if its destination may be
    // written one-sidedly; ended only after `transfer` is gone (its puts
    // drained or dropped): declared before it, so also destroyed after it.
    std::unique_ptr<KvWriteHold> hold;
    // A fresh hold asked for while `transfer` writes under `hold` (a step
    // longer than a quarter of the hold's span); it replaces `hold` once granted,
    // so the two pins overlap and the blocks are never unpinned between.
    std::unique_ptr<KvWriteHold> renewal;
    std::unique_ptr<KvTransfer> transfer;
    absl::Status error;

    // The transfer ends (its puts drained or dropped) before its holds do.
    void EndTransfer() {
      transfer.reset();
      renewal.reset();
      hold.reset();
    }
  };
  void Loop();
  // Moves newly submitted jobs into the scheduler; ends cancelled and
  // expired ones. Loop thread.
  void Admit(std::deque<std::shared_ptr<PrefillJob>> jobs);
  void DropCancelled();
  // Opens `a`'s KV write hold when its destination offers a one-sided
  // transport (the transfer's own pick is known only when it starts).
  void OpenWriteHold(Active& a);
  // A new hold on `a`'s writable destination blocks; null when its
  // destination offers no one-sided transport (or there is no holder).
  std::unique_ptr<KvWriteHold> NewWriteHold(const Active& a);
  // Once `a`'s transfer started: OK when its writes may go (a two-sided
  // transport, whose writes the decode side gates itself: the hold is
  // dropped; or a granted hold); else why not, as the request's status.
  absl::Status SecureWrites(Active& a);
  // Between two layers' puts of `a`'s transfer: asks for a fresh hold
  // once `a.hold` is due for renewal, and swaps it in once granted. A
  // refused renewal is not retried; `a.hold` then runs out and Held says so.
  void RenewWriteHoldWhileWriting(Active& a);
  // The request's status for a hold that is refused or lost.
  absl::Status HoldFailure(const Active& a, absl::Status why) const;
  void RunStep(const StepPlan& plan);
  // Finishes the transfer, frees the scratch blocks, completes the job.
  void Complete(SeqId id, const SampleResult* first, absl::Time computed);
  void PublishStats();

  Engine& engine_;
  KvTransport& transport_;
  KvEndpointInfo self_;  // fixed once Start() ran
  absl::Duration transfer_finish_timeout_ = absl::InfiniteDuration();  // likewise
  PrefillMetrics* metrics_;
  TransferCounter* transfers_;
  KvWriteHolder* write_holder_ = nullptr;  // fixed once Start() ran; loop thread only
  // Decode workers that answered a hold UNIMPLEMENTED (an older version,
  // during a rolling upgrade), each logged once. Loop thread only.
  absl::flat_hash_set<std::string> without_holds_;
  Scheduler scheduler_;                          // loop thread only
  absl::flat_hash_map<SeqId, Active> active_;    // loop thread only
  SeqId next_id_ = 1;                            // loop thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::deque<std::shared_ptr<PrefillJob>> queue_;
  PrefillLoopStats stats_;
  std::thread thread_;
};

}  // namespace tandem
