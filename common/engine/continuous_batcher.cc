#include "common/engine/continuous_batcher.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace tandem {

ContinuousBatcher::ContinuousBatcher(Engine& engine, BatcherOptions options)
    : engine_(engine), options_(options) {}

bool ContinuousBatcher::RunsBefore(const Entry* a, const Entry* b) {
  if (a->priority != b->priority) return a->priority > b->priority;
  return a->arrival < b->arrival;
}

void ContinuousBatcher::Add(Sequence seq, int32_t priority) {
  auto e = std::make_unique<Entry>();
  e->seq = std::move(seq);
  e->priority = priority;
  e->arrival = next_arrival_++;
  Entry* raw = e.get();
  entries_[raw->seq.id] = std::move(e);
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), raw, RunsBefore), raw);
}

void ContinuousBatcher::Remove(SeqId id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry* e = it->second.get();
  std::erase(running_, e);
  std::erase(waiting_, e);
  engine_.Release(e->seq);
  entries_.erase(it);
}

const Sequence* ContinuousBatcher::Find(SeqId id) const {
  auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second->seq;
}

void ContinuousBatcher::Admit() {
  KvCacheManager& kv = engine_.kv_cache();
  // Each running sequence needs one token of budget and, at a block
  // boundary, one more block.
  int64_t token_budget = options_.max_batch_tokens;
  int64_t free_blocks = kv.num_free_blocks();
  for (const Entry* r : running_) {
    token_budget -= static_cast<int64_t>(r->seq.tokens.size()) - r->seq.num_computed;
    free_blocks -= kv.BlocksNeeded(r->seq.id, r->seq.tokens.size());
  }
  while (!waiting_.empty() && static_cast<int32_t>(running_.size()) < options_.max_batch_size) {
    Entry* next = waiting_.front();
    const int64_t tokens = static_cast<int64_t>(next->seq.tokens.size()) - next->seq.num_computed;
    const int64_t blocks = kv.BlocksNeeded(next->seq.id, next->seq.tokens.size());
    if (!running_.empty() && (tokens > token_budget || blocks > free_blocks)) break;
    token_budget -= tokens;
    free_blocks -= blocks;
    running_.push_back(next);
    waiting_.erase(waiting_.begin());
  }
}

void ContinuousBatcher::Preempt(Iteration* it) {
  auto victim = std::min_element(running_.begin(), running_.end(),
                                 [](const Entry* a, const Entry* b) { return RunsBefore(b, a); });
  Entry* v = *victim;
  running_.erase(victim);
  engine_.Release(v->seq);
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), v, RunsBefore), v);
  ++it->preemptions;
  ++total_preemptions_;
}

bool ContinuousBatcher::ReleaseWaitingBlocks(Iteration* it) {
  // The last in waiting order loses its blocks first.
  for (auto w = waiting_.rbegin(); w != waiting_.rend(); ++w) {
    if (engine_.kv_cache().Contains((*w)->seq.id)) {
      engine_.Release((*w)->seq);
      ++it->preemptions;
      ++total_preemptions_;
      return true;
    }
  }
  return false;
}

absl::StatusOr<ContinuousBatcher::Iteration> ContinuousBatcher::Step() {
  Iteration it;
  for (;;) {
    Admit();
    if (running_.empty()) return it;
    std::vector<Sequence*> batch;
    batch.reserve(running_.size());
    for (Entry* r : running_) batch.push_back(&r->seq);
    absl::StatusOr<std::vector<SampleResult>> step = engine_.Step(batch);
    if (absl::IsResourceExhausted(step.status())) {
      if (running_.size() == 1) {
        // Waiting sequences may hold blocks (adopted from a prefill, or
        // admitted KV): take them back before giving up on this one.
        if (ReleaseWaitingBlocks(&it)) continue;
        // Alone and still too big: it can never run in this pool.
        const SeqId id = running_.front()->seq.id;
        it.failed.emplace_back(id, step.status());
        Remove(id);
        continue;
      }
      Preempt(&it);
      continue;
    }
    if (!step.ok()) return step.status();
    it.batch_size = static_cast<int32_t>(running_.size());
    it.sampled.reserve(running_.size());
    for (size_t i = 0; i < running_.size(); ++i) {
      it.sampled.push_back({running_[i]->seq.id, std::move((*step)[i])});
    }
    return it;
  }
}

}  // namespace tandem
