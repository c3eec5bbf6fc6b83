// The engine both workers use: runs a batch of sequences through the model
// backend over the paged KV cache and samples their next tokens. It keeps
// the bookkeeping (which blocks a sequence owns, what is computed) and
// leaves the math to the backend, so CPU and CUDA backends share it.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/model_backend.h"
#include "common/engine/scheduler.h"
#include "common/engine/sequence.h"
#include "common/kv/kv_cache_manager.h"
#include "common/sampling/sampler.h"

namespace tandem {

// The token a step sampled for sequence `id`.
struct StepSample {
  SeqId id = 0;
  SampleResult sample;
};

// Planning whole gaps in one step, reserving as needed: what tests, benches
// and tools that drive the engine directly use instead of a Scheduler.
// RESOURCE_EXHAUSTED (no sequence's table shrinks) when the pool is short.
absl::StatusOr<StepPlan> PlanWhole(KvCacheManager& kv, std::span<Sequence* const> seqs);

// Not thread-safe: one scheduling thread drives Step(). The KvCacheManager
// it exposes is thread-safe, so other threads may reserve and free blocks.
class Engine {
 public:
  explicit Engine(std::unique_ptr<ModelBackend> backend);

  const ModelConfig& config() const { return backend_->config(); }
  ModelBackend& backend() { return *backend_; }
  KvCacheManager& kv_cache() { return kv_cache_; }
  const KvCacheManager& kv_cache() const { return kv_cache_; }

  // Computes exactly `plan` (Scheduler::Schedule): for each chunk, the
  // model over tokens [num_computed, num_computed + num_tokens) of its
  // sequence, prefill pieces and decode steps mixed; then samples the next
  // token of each chunk that reaches its sequence's end and appends it.
  // KV is not reserved here: every chunk's blocks must already be in the
  // KvCacheManager (FAILED_PRECONDITION otherwise, nothing computed).
  // `on_layer_done(l)` fires when layer l's KV of every chunk is in the pool.
  // On a backend error no sequence's state changed.
  absl::StatusOr<std::vector<StepSample>> Step(const StepPlan& plan,
                                               std::function<void(int)> on_layer_done = nullptr);

  // Runs the forward pass of `plan` like Step() but returns the logits of
  // every planned token instead of sampling (teacher forcing, tests). The
  // KV is written and num_computed advanced.
  absl::StatusOr<ForwardOutput> ComputeLogits(const StepPlan& plan);

  // Frees a sequence's KV blocks; it must be recomputed from scratch if it
  // runs again (num_computed = 0).
  void Release(Sequence& seq);

 private:
  // `sample`: ask the backend to sample (samples_on_device backends only).
  absl::StatusOr<ForwardOutput> Forward(const StepPlan& plan, bool all_logits,
                                        std::function<void(int)> on_layer_done, bool sample);

  std::unique_ptr<ModelBackend> backend_;
  KvCacheManager kv_cache_;
  Sampler sampler_;
};

}  // namespace tandem
