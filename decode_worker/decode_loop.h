// The decode worker's scheduling thread: adopts sequences whose prompt KV
// a prefill worker wrote into reserved blocks, runs them in one continuous
// batch (ContinuousBatcher), applies the token-level stopping rules, and
// hands each sampled token to the request's DecodeStream.
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
#include "common/engine/continuous_batcher.h"
#include "common/engine/engine.h"
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
  std::vector<int32_t> tokens;  // prompt followed by the prefill's first token
  int32_t prompt_len = 0;
  std::vector<int32_t> blocks;  // the prompt's KV, claimed from a reservation
  SamplingParams sampling;
  // Token-level rules only (max/min tokens, EOS, stop ids): stop strings
  // are the router's, which sees the text.
  StoppingParams stopping;
  uint64_t seed = 0;
  int32_t priority = 0;
  std::shared_ptr<DecodeStream> stream;
};

struct DecodeLoopStats {
  int32_t running = 0;
  int32_t waiting = 0;
  int32_t batch_size = 0;      // of the last iteration
  int32_t max_batch_size = 0;  // since start
  int64_t iterations = 0;
  int64_t preemptions = 0;
};

class DecodeLoop {
 public:
  // `metrics` may be null (tests).
  DecodeLoop(Engine& engine, KvReservations& reservations, BatcherOptions options,
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

  Engine& engine_;
  KvReservations& reservations_;
  DecodeMetrics* metrics_;
  const std::vector<int32_t> eos_ids_;
  ContinuousBatcher batcher_;  // loop thread only
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
