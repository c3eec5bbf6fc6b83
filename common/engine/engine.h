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
#include "common/engine/sequence.h"
#include "common/kv/kv_cache_manager.h"
#include "common/sampling/sampler.h"

namespace tandem {

// Not thread-safe: one scheduling thread drives Step(). The KvCacheManager
// it exposes is thread-safe, so other threads may reserve and free blocks.
class Engine {
 public:
  explicit Engine(std::unique_ptr<ModelBackend> backend);

  const ModelConfig& config() const { return backend_->config(); }
  ModelBackend& backend() { return *backend_; }
  KvCacheManager& kv_cache() { return kv_cache_; }

  // For every sequence, runs the model over tokens [num_computed, size()) —
  // a prompt (prefill) or the last sampled token (a decode step), mixed
  // freely — then samples one token per sequence and appends it.
  // KV blocks are reserved first. RESOURCE_EXHAUSTED means the batch did not
  // fit and nothing was computed or sampled (some sequences may have gained
  // blocks they will use later; none is leaked): the caller preempts and
  // retries. `on_layer_done(l)` fires when layer l's KV is in the pool.
  absl::StatusOr<std::vector<SampleResult>> Step(std::span<Sequence* const> seqs,
                                                 std::function<void(int)> on_layer_done = nullptr);

  // Runs the forward pass like Step() but returns the logits of every
  // uncomputed token instead of sampling (teacher forcing, tests). The KV is
  // written and num_computed advanced.
  absl::StatusOr<ForwardOutput> ComputeLogits(std::span<Sequence* const> seqs);

  // Frees a sequence's KV blocks; it must be recomputed from scratch if it
  // runs again (num_computed = 0).
  void Release(Sequence& seq);

 private:
  // `sample`: ask the backend to sample (samples_on_device backends only).
  absl::StatusOr<ForwardOutput> Forward(std::span<Sequence* const> seqs, bool all_logits,
                                        std::function<void(int)> on_layer_done, bool sample);

  std::unique_ptr<ModelBackend> backend_;
  KvCacheManager kv_cache_;
  Sampler sampler_;
};

}  // namespace tandem
