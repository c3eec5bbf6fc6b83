// Runs generation requests to completion in one process: continuous
// batching over one Engine, detokenization and stopping per request. It is
// the monolithic reference that the disaggregated path must match token
// for token, and what `tandem generate` uses.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/engine/engine.h"
#include "common/engine/scheduler.h"
#include "common/sampling/sampler.h"
#include "common/sampling/sampling_params.h"
#include "common/sampling/stop_checker.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  SamplingParams sampling;
  StoppingParams stopping;
  bool skip_special_tokens = false;
  int32_t priority = 0;  // larger is preempted last
  // Only requests of one salt share cached KV (Sequence::cache_salt).
  std::string cache_salt;
};

// One generated token of request `request`, or the end of that request.
struct GenerationEvent {
  size_t request = 0;
  SampleResult sample;   // valid unless `token` < 0
  int32_t token = -1;    // -1 on a final event that carries no token
  std::string text;      // text released by this event (after stop-string hold-back)
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string matched_stop;
  absl::Status error;    // set when the request failed (finish_reason kError)
};

// The model's end-of-sequence ids: config.json's, else the tokenizer's.
std::vector<int32_t> ModelEosIds(const ModelConfig& config, const Tokenizer& tokenizer);

// Checks a request against the model and the KV pool before it is queued:
// INVALID_ARGUMENT for bad parameters or token ids, RESOURCE_EXHAUSTED for a
// prompt that could never fit the pool.
absl::Status ValidateGenerationRequest(const ModelConfig& config, const KvCacheManager& kv,
                                       std::span<const int32_t> prompt, const SamplingParams& sampling,
                                       const StoppingParams& stopping);

// The one process schedules like every worker: the shared Scheduler
// (decode steps first, prefill chunks under the token budget, preemption of
// the last in service order by recompute).
using LocalGeneratorOptions = SchedulerOptions;

class LocalGenerator {
 public:
  LocalGenerator(Engine& engine, const Tokenizer& tokenizer, LocalGeneratorOptions options = {});

  // Calls `on_event` from this thread, in order, for every token and for the
  // end of every request. Requests with invalid parameters end with an
  // error event; the run itself fails only on backend errors.
  absl::Status Run(std::span<const GenerationRequest> requests,
                   const std::function<void(const GenerationEvent&)>& on_event);

  // Total preemptions so far (for tests and logs).
  int64_t num_preemptions() const { return num_preemptions_; }
  // Largest batch run so far.
  int32_t max_batch_seen() const { return max_batch_seen_; }

 private:
  Engine& engine_;
  const Tokenizer& tokenizer_;
  LocalGeneratorOptions options_;
  int64_t num_preemptions_ = 0;
  int32_t max_batch_seen_ = 0;
};

}  // namespace tandem
