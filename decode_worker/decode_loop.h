// The decode (and aggregated) worker's scheduling thread: adopts sequences
// whose prompt KV a prefill worker wrote into reserved blocks, takes
// sequences whose prompt it computes itself (aggregated role, or a short
// prompt under conditional disaggregation), runs them all in one continuous
// batch planned by the shared Scheduler (decode steps first, then prompt
// chunks under the token budget), applies the token-level stopping rules,
// and hands each sampled token to the request's DecodeStream.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/engine/engine.h"
#include "common/engine/scheduler.h"
#include "common/metrics/serving_metrics.h"
#include "common/sampling/stop_checker.h"
#include "decode_worker/kv_reservations.h"

namespace tandem {

struct DecodeEvent {
  SampleResult sample;  // token < 0 on an end without a token
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  absl::Status error;  // set with reason kError
};

// One request's channel from the loop thread (producer) to its gRPC
// handler thread (consumer).
class DecodeStream {
 public:
  void Push(DecodeEvent e);
  // Everything queued, waiting up to `timeout` for the first event.
  std::vector<DecodeEvent> Take(absl::Duration timeout);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<DecodeEvent> events_;
};

struct DecodeJob {
  std::string request_id;
  // The prompt followed by the prefill's first token; or the prompt alone
  // when `blocks` is empty: the loop computes the prompt itself and its
  // first event carries the first token.
  std::vector<int32_t> tokens;
  int32_t prompt_len = 0;
  std::vector<int32_t> blocks;  // the prompt's KV, claimed from a reservation
  SamplingParams sampling;
  // Token-level rules only (max/min tokens, EOS, stop ids): stop strings
  // are the router's, which sees the text.
  StoppingParams stopping;
  uint64_t seed = 0;
  // The effective cache salt (DecodeRequest.cache_salt): the blocks this
  // sequence fills are cached under it, and a locally computed prompt
  // starts from its cached prefix under it.
  std::string cache_salt;
  int32_t priority = 0;
  absl::Time deadline = absl::InfiniteFuture();  // orders equal priorities
  std::shared_ptr<DecodeStream> stream;
};

struct DecodeLoopStats {
  int32_t running = 0;
  int32_t waiting = 0;
  int32_t batch_size = 0;      // of the last iteration
  int32_t max_batch_size = 0;  // since start
  int64_t iterations = 0;
  int64_t preemptions = 0;
  int64_t prompt_tokens_computed = 0;  // prefill chunks run here (recompute included)
};

class DecodeLoop {
 public:
  // `metrics` may be null (tests).
  DecodeLoop(Engine& engine, KvReservations& reservations, SchedulerOptions options,
             std::vector<int32_t> eos_ids, DecodeMetrics* metrics = nullptr);
  ~DecodeLoop();

  void Start();
  // Ends every request still running with UNAVAILABLE and joins the thread.
  void Stop();

  // Thread-safe. The job's blocks belong to the loop from here on. Returns
  // the id to Cancel() it with.
  SeqId Submit(DecodeJob job);
  // Thread-safe; the request's blocks are freed at the next iteration.
  void Cancel(SeqId id);
  // RESOURCE_EXHAUSTED when a prompt of `prompt_len` tokens (and its first
  // token) could never fit this worker's KV pool. Thread-safe.
  absl::Status CheckFits(int64_t prompt_len) const;

  DecodeLoopStats stats() const;

 private:
  struct Active {
    std::string request_id;
    std::shared_ptr<DecodeStream> stream;
    std::unique_ptr<StopChecker> stop;
  };
  void Loop();
  void AdmitSubmitted(std::deque<std::pair<SeqId, DecodeJob>> jobs);
  void Finish(SeqId id, DecodeEvent e);
  void RunStep(const StepPlan& plan);

  Engine& engine_;
  KvReservations& reservations_;
  DecodeMetrics* metrics_;
  const std::vector<int32_t> eos_ids_;
  Scheduler scheduler_;  // loop thread only
  int32_t last_batch_ = 0;  // loop thread only
  absl::flat_hash_map<SeqId, Active> active_;  // loop thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  SeqId next_id_ = 1;
  std::deque<std::pair<SeqId, DecodeJob>> submitted_;
  std::vector<SeqId> cancelled_;
  DecodeLoopStats stats_;
  std::thread thread_;
};

}  // namespace tandem
