#include "common/engine/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status ValidateSchedulerOptions(const SchedulerOptions& o) {
  if (o.max_batch_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_size must be at least 1, got ", o.max_batch_size));
  }
  // Decode steps are planned before prefill chunks: a budget no larger than
  // the batch could leave nothing for a waiting prompt, which would starve.
  if (o.max_batch_tokens <= o.max_batch_size) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_tokens (", o.max_batch_tokens,
                                                   ") must exceed max_batch_size (", o.max_batch_size,
                                                   ") so that prompts get budget beside full decode batches"));
  }
  if (o.max_chunk_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_chunk_tokens must be >= 0, got ", o.max_chunk_tokens));
  }
  return absl::OkStatus();
}

Scheduler::Scheduler(KvCacheManager& kv, SchedulerOptions options) : kv_(kv), options_(options) {}

bool Scheduler::RunsBefore(const Entry* a, const Entry* b) {
  if (a->key.priority != b->key.priority) return a->key.priority > b->key.priority;
  if (a->key.deadline != b->key.deadline) return a->key.deadline < b->key.deadline;
  return a->arrival < b->arrival;
}

void Scheduler::InsertWaiting(Entry* e) {
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), e, RunsBefore), e);
}

void Scheduler::Add(Sequence seq, SchedulingKey key) {
  auto e = std::make_unique<Entry>();
  e->seq = std::move(seq);
  e->key = key;
  e->arrival = next_arrival_++;
  Entry* raw = e.get();
  entries_[raw->seq.id] = std::move(e);
  InsertWaiting(raw);
}

void Scheduler::Remove(SeqId id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry* e = it->second.get();
  std::erase(running_, e);
  std::erase(waiting_, e);
  FreeKv(e);
  entries_.erase(it);
}

const Sequence* Scheduler::Find(SeqId id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second->seq;
}

int32_t Scheduler::Remaining(const Entry* e) const {
  return static_cast<int32_t>(e->seq.tokens.size()) - e->seq.num_computed;
}

int32_t Scheduler::ChunkSize(const Entry* e, int64_t budget, bool batch_empty) const {
  int64_t n = Remaining(e);
  if (n <= 0) return 0;
  if (options_.chunked_prefill) {
    if (options_.max_chunk_tokens > 0) n = std::min<int64_t>(n, options_.max_chunk_tokens);
    return static_cast<int32_t>(std::max<int64_t>(0, std::min(n, budget)));
  }
  // Whole prompts only: one that exceeds the budget runs alone rather than
  // never.
  if (n <= budget || batch_empty) return static_cast<int32_t>(n);
  return 0;
}

absl::Status Scheduler::Allocate(Entry* e, int32_t num_tokens) {
  const int64_t upto = options_.reserve_whole ? static_cast<int64_t>(e->seq.tokens.size())
                                              : static_cast<int64_t>(e->seq.num_computed) + num_tokens;
  return kv_.Reserve(e->seq.id, upto);
}

void Scheduler::FreeKv(Entry* e) {
  if (options_.enable_prefix_caching) {
    // Only blocks whose KV is computed; a failure means a broken table,
    // and the blocks are freed (uncached) either way.
    kv_.CommitFullBlocks(e->seq.id, e->seq.tokens, e->seq.num_computed, e->seq.cache_salt).IgnoreError();
  }
  kv_.Free(e->seq.id);
}

int32_t Scheduler::MatchCachedPrefix(Entry* e) {
  if (!options_.enable_prefix_caching || e->seq.num_computed != 0 || kv_.Contains(e->seq.id)) return 0;
  absl::StatusOr<int32_t> hit = kv_.MatchPrefix(e->seq.id, e->seq.tokens, e->seq.cache_salt);
  if (!hit.ok()) return 0;
  e->seq.num_computed = *hit;
  return *hit;
}

void Scheduler::Preempt(Entry* e, StepPlan* plan) {
  std::erase(running_, e);
  FreeKv(e);
  e->seq.num_computed = 0;
  InsertWaiting(e);
  plan->preempted.push_back(e->seq.id);
  ++total_preemptions_;
}

bool Scheduler::ReleaseWaitingBlocks(const Entry* keep, StepPlan* plan) {
  for (auto w = waiting_.rbegin(); w != waiting_.rend(); ++w) {
    if (*w == keep || !kv_.Contains((*w)->seq.id)) continue;
    FreeKv(*w);
    (*w)->seq.num_computed = 0;
    plan->preempted.push_back((*w)->seq.id);
    ++total_preemptions_;
    return true;
  }
  return false;
}

void Scheduler::Fail(Entry* e, absl::Status why, StepPlan* plan) {
  plan->failed.emplace_back(e->seq.id, std::move(why));
  Remove(e->seq.id);
}

StepPlan Scheduler::Schedule() {
  StepPlan plan;
  int64_t budget = options_.max_batch_tokens;
  const int32_t total_blocks = kv_.num_total_blocks();
  auto never_fits = [&](const Entry* e) {
    return kv_.layout().BlocksForTokens(static_cast<int64_t>(e->seq.tokens.size())) > total_blocks;
  };
  auto too_big = [&](const Entry* e) {
    return absl::ResourceExhaustedError(absl::StrCat("sequence of ", e->seq.tokens.size(),
                                                     " tokens needs more KV blocks than the pool's ", total_blocks));
  };

  // 0. Blocks the previous step filled become cached (they are read-only
  //    from now on: the sequence computes past them).
  if (options_.enable_prefix_caching) {
    for (Entry* e : running_) {
      kv_.CommitFullBlocks(e->seq.id, e->seq.tokens, e->seq.num_computed, e->seq.cache_salt).IgnoreError();
    }
  }

  // 1. Running sequences, in service order. Entries before `i` are planned;
  //    preemption victims come from the back, so a planned sequence never
  //    loses its blocks within the step that planned it.
  for (size_t i = 0; i < running_.size();) {
    Entry* e = running_[i];
    const int32_t n = ChunkSize(e, budget, plan.chunks.empty());
    if (n == 0) {  // out of budget: keeps its KV, computes next step
      ++i;
      continue;
    }
    bool planned = false;
    for (;;) {
      if (Allocate(e, n).ok()) {
        planned = true;
        break;
      }
      Entry* victim = running_.back();
      if (victim != e) {
        Preempt(victim, &plan);
        continue;
      }
      if (i > 0) {  // every other running sequence comes before it
        Preempt(e, &plan);
        break;
      }
      // Alone: take blocks back from waiting sequences before giving up.
      if (ReleaseWaitingBlocks(e, &plan)) continue;
      if (never_fits(e)) Fail(e, too_big(e), &plan);
      // Otherwise the rest of the pool is reserved by another thread
      // (incoming transfers); those blocks come back as waiting
      // sequences, which the next step can take them from.
      break;
    }
    if (!planned) {
      if (i < running_.size() && running_[i] == e) ++i;  // kept, not planned
      continue;
    }
    plan.chunks.push_back({&e->seq, n});
    budget -= n;
    ++i;
  }

  // 2. Waiting sequences, in service order, while the batch, the budget and
  //    the pool allow. None in a step that had to preempt (the pool is
  //    short: admitting would only preempt again).
  const bool pool_short = !plan.preempted.empty();
  while (!pool_short && !waiting_.empty() &&
         static_cast<int32_t>(running_.size()) < options_.max_batch_size) {
    Entry* w = waiting_.front();
    const bool looks_up = options_.enable_prefix_caching && w->seq.num_computed == 0 && !kv_.Contains(w->seq.id);
    const int32_t hit = MatchCachedPrefix(w);
    // Not admitted after all: give the cached blocks back (evictable again,
    // so the pool has them) rather than pin them while it waits.
    auto unmatch = [&] {
      if (hit == 0) return;
      kv_.Free(w->seq.id);
      w->seq.num_computed = 0;
    };
    const int32_t n = ChunkSize(w, budget, plan.chunks.empty());
    if (n == 0) {
      unmatch();
      break;
    }
    if (!Allocate(w, n).ok()) {
      unmatch();
      if (!running_.empty()) break;  // blocks come back as running ones finish
      if (ReleaseWaitingBlocks(w, &plan)) continue;
      if (never_fits(w)) {
        Fail(w, too_big(w), &plan);
        continue;
      }
      break;  // another thread holds the pool for now
    }
    if (looks_up) kv_.RecordPrefixLookup(static_cast<int64_t>(w->seq.tokens.size()), hit);
    waiting_.erase(waiting_.begin());
    running_.insert(std::upper_bound(running_.begin(), running_.end(), w, RunsBefore), w);
    plan.chunks.push_back({&w->seq, n});
    budget -= n;
  }

  std::stable_partition(plan.chunks.begin(), plan.chunks.end(),
                        [](const ScheduledChunk& c) { return c.num_tokens == 1 && c.samples(); });
  for (const ScheduledChunk& c : plan.chunks) {
    plan.num_tokens += c.num_tokens;
    if (c.num_tokens == 1 && c.samples()) ++plan.num_decode;
  }
  return plan;
}

}  // namespace tandem
