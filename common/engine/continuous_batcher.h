// Iteration-level scheduling over one Engine (Orca/vLLM-style continuous
// batching): every Step() runs one forward pass for all running sequences
// (prefill chunks and decode steps mixed), new sequences join at the next
// step, and finished ones leave as soon as their owner removes them.
// Used by the single-process LocalGenerator and by the decode worker, so
// both schedule the same way.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/engine/engine.h"
#include "common/engine/sequence.h"

namespace tandem {

struct BatcherOptions {
  int32_t max_batch_size = 64;
  // Tokens one iteration may compute (prompt tokens plus one per decode).
  int64_t max_batch_tokens = 8192;
};

// Not thread-safe: one scheduling thread owns the batcher and its Engine.
//
// Admission, per iteration: running sequences first; then waiting ones in
// order of (priority desc, arrival) while the batch size, the token budget
// and the free KV blocks allow. An oversized prompt still runs alone, so
// nothing starves. Preemption: when the KV pool runs out mid-step, the
// running sequence with the lowest priority (newest first among equals)
// loses its blocks and goes back to waiting; it is recomputed from its
// tokens later, which yields the same tokens because the backend is
// batch-invariant and sampling is keyed by (seed, step).
class ContinuousBatcher {
 public:
  ContinuousBatcher(Engine& engine, BatcherOptions options);

  // Queues a sequence. It may already own KV in the engine's cache under
  // seq.id (num_computed > 0), e.g. blocks a prefill worker filled.
  void Add(Sequence seq, int32_t priority);
  // Takes a sequence out wherever it is (finished, cancelled, failed) and
  // frees its KV blocks. Unknown ids are ignored.
  void Remove(SeqId id);
  // nullptr when unknown.
  const Sequence* Find(SeqId id) const;

  struct Sampled {
    SeqId id = 0;
    SampleResult sample;
  };
  struct Iteration {
    std::vector<Sampled> sampled;  // one token for each sequence in the step
    // Sequences that cannot run even alone (their KV needs more blocks
    // than the pool has); they were removed.
    std::vector<std::pair<SeqId, absl::Status>> failed;
    int32_t batch_size = 0;
    int32_t preemptions = 0;
  };
  // Runs one iteration. Errors are backend failures (the batch's sequences
  // keep their state; the caller decides what to fail).
  absl::StatusOr<Iteration> Step();

  bool idle() const { return running_.empty() && waiting_.empty(); }
  size_t num_running() const { return running_.size(); }
  size_t num_waiting() const { return waiting_.size(); }
  int64_t total_preemptions() const { return total_preemptions_; }

 private:
  struct Entry {
    Sequence seq;
    int32_t priority = 0;
    uint64_t arrival = 0;
  };
  static bool RunsBefore(const Entry* a, const Entry* b);
  void Admit();
  void Preempt(Iteration* it);
  // Frees the KV of one waiting sequence that holds some; false if none does.
  bool ReleaseWaitingBlocks(Iteration* it);

  Engine& engine_;
  BatcherOptions options_;
  uint64_t next_arrival_ = 0;
  absl::flat_hash_map<SeqId, std::unique_ptr<Entry>> entries_;
  std::vector<Entry*> running_;  // in admission order
  std::vector<Entry*> waiting_;  // sorted by RunsBefore
  int64_t total_preemptions_ = 0;
};

}  // namespace tandem
