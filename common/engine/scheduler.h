// The step planner every process that computes shares (prefill worker,
// decode worker, aggregated worker, `tandem generate`): each iteration it
// decides which sequences run and how many of their tokens each computes,
// reserves their KV through one entry point, and preempts when the pool is
// short. The Engine then computes exactly the plan (Engine::Step).
//
// The model is vLLM v1's: a sequence's `num_computed` catches up with its
// `tokens.size()`. A prompt, a chunk of a prompt, a decode step and the
// recompute after a preemption are all the same gap; the planner only
// chooses how much of each gap one step closes.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/engine/sequence.h"
#include "common/kv/kv_cache_manager.h"

namespace tandem {

struct SchedulerOptions {
  // Most sequences computing in one step.
  int32_t max_batch_size = 256;
  // Most tokens one step computes: one per decode step plus the prefill
  // chunks. Decode steps are planned first, so a prefill burst never
  // delays a running sequence's next token by more than one chunk's time.
  int64_t max_batch_tokens = 8192;
  // Split prompts longer than what is left of the budget over several
  // steps (Sarathi-Serve). Off: a prompt runs whole, alone if it must.
  bool chunked_prefill = true;
  // Longest chunk of one sequence per step; 0: only the budget limits it.
  int32_t max_chunk_tokens = 0;
  // Reserve the KV of the whole uncomputed part when a sequence is first
  // planned, rather than chunk by chunk (the prefill worker: its transfer
  // names every source block when it starts).
  bool reserve_whole = false;
  // Start each admitted sequence from the longest cached prefix of its
  // tokens and keep its full blocks cached (common/kv/). Off: every
  // sequence computes from its first token, and nothing is cached.
  bool enable_prefix_caching = true;
};

// INVALID_ARGUMENT naming the field.
absl::Status ValidateSchedulerOptions(const SchedulerOptions& o);

// One sequence's part of a step: tokens [num_computed, num_computed +
// num_tokens) of `seq`. The KV cache holds blocks for all of them.
struct ScheduledChunk {
  Sequence* seq = nullptr;
  int32_t num_tokens = 0;
  // True when the chunk reaches the end of the sequence's tokens: the step
  // samples its next token. A prompt's earlier chunks sample nothing.
  bool samples() const { return seq->num_computed + num_tokens == static_cast<int32_t>(seq->tokens.size()); }
};

struct StepPlan {
  std::vector<ScheduledChunk> chunks;  // decode steps first, then prefill chunks
  // Sequences that lost their KV this step; they wait and are recomputed
  // later (same tokens: the backend is batch-invariant and sampling is
  // keyed by seed and step).
  std::vector<SeqId> preempted;
  // Sequences that can never run (their KV needs more blocks than the
  // whole pool); removed from the scheduler, their KV freed.
  std::vector<std::pair<SeqId, absl::Status>> failed;
  int64_t num_tokens = 0;
  int32_t num_decode = 0;  // chunks of exactly one token that sample
  bool empty() const { return chunks.empty(); }
};

// Order of service: higher priority first, then the earlier TTFT deadline,
// then the earlier arrival. Preemption takes the last in this order.
struct SchedulingKey {
  int32_t priority = 0;
  absl::Time deadline = absl::InfiniteFuture();
};

// Not thread-safe: one scheduling thread owns it and the sequences it holds.
// Prefix caching: a sequence's full blocks are committed to the cache at
// the start of the step after the one that computed them, and when it is
// removed or preempted; it only ever computes into blocks past its cached
// prefix, which it owns alone.
// The KvCacheManager it reserves through is thread-safe, so other threads
// may reserve blocks (incoming transfers) while it plans.
//
// Invariants: every sequence is in exactly one of running_ and waiting_;
// a waiting sequence may hold KV (adopted from a transfer, or kept across a
// step where the budget ran out), a running one always does once planned.
class Scheduler {
 public:
  Scheduler(KvCacheManager& kv, SchedulerOptions options);

  const SchedulerOptions& options() const { return options_; }

  // Queues a sequence. It may already own KV under seq.id (num_computed > 0:
  // blocks a prefill worker filled, or a cached prefix matched elsewhere).
  // One that owns none and has computed nothing looks up its cached
  // prefix when it is admitted (again after a preemption).
  void Add(Sequence seq, SchedulingKey key = {});
  // Takes a sequence out wherever it is and frees its KV (its computed full
  // blocks stay cached). Unknown ids are ignored.
  void Remove(SeqId id);
  // nullptr when unknown.
  const Sequence* Find(SeqId id) const;

  // Plans the next step and reserves its KV. An empty plan with nothing
  // failed means there is nothing to do (idle()) or nothing fits until
  // another thread frees blocks.
  StepPlan Schedule();

  bool idle() const { return running_.empty() && waiting_.empty(); }
  size_t num_running() const { return running_.size(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t size() const { return entries_.size(); }
  int64_t total_preemptions() const { return total_preemptions_; }

 private:
  struct Entry {
    Sequence seq;
    SchedulingKey key;
    uint64_t arrival = 0;
  };
  static bool RunsBefore(const Entry* a, const Entry* b);
  int32_t Remaining(const Entry* e) const;
  // Tokens of `e` this step may compute with `budget` left; 0: none.
  int32_t ChunkSize(const Entry* e, int64_t budget, bool batch_empty) const;
  // The one entry point for KV: blocks for the chunk (or, with
  // reserve_whole, the whole gap). All-or-nothing.
  absl::Status Allocate(Entry* e, int32_t num_tokens);
  void Preempt(Entry* e, StepPlan* plan);
  // Frees `e`'s KV, committing its computed full blocks to the cache first
  // (with caching on).
  void FreeKv(Entry* e);
  // With caching on, for a sequence that owns no KV and has computed
  // nothing: takes its cached prefix and moves num_computed past it.
  // Returns the tokens hit (0 otherwise).
  int32_t MatchCachedPrefix(Entry* e);
  void InsertWaiting(Entry* e);
  // Frees the KV of the waiting sequence last in service order that holds
  // some (other than `keep`); false if none does.
  bool ReleaseWaitingBlocks(const Entry* keep, StepPlan* plan);
  void Fail(Entry* e, absl::Status why, StepPlan* plan);

  KvCacheManager& kv_;
  const SchedulerOptions options_;
  uint64_t next_arrival_ = 0;
  absl::flat_hash_map<SeqId, std::unique_ptr<Entry>> entries_;
  std::vector<Entry*> running_;  // sorted by RunsBefore
  std::vector<Entry*> waiting_;  // sorted by RunsBefore
  int64_t total_preemptions_ = 0;
};

}  // namespace tandem
