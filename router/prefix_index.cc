#include "router/prefix_index.h"

#include <algorithm>

#include "common/util/logging.h"

namespace tandem::router {

BlockHash BlockKeyFromProto(const v1::BlockKey& key) { return BlockHash{key.hi(), key.lo()}; }

void BlockKeyToProto(const BlockHash& key, v1::BlockKey* out) {
  out->set_hi(key.hi);
  out->set_lo(key.lo);
}

PrefixIndex::PrefixIndex(absl::Duration stale_after, absl::Duration predicted_ttl)
    : stale_after_(stale_after), predicted_ttl_(predicted_ttl) {}

void PrefixIndex::Unpredict(WorkerState& w, const BlockHash& key) {
  if (w.predicted.erase(key) == 0) return;
  auto it = predicted_.find(key);
  if (it == predicted_.end()) return;
  auto& slots = it->second;
  slots.erase(std::remove_if(slots.begin(), slots.end(),
                             [&](const std::pair<Slot, absl::Time>& p) { return p.first == w.slot; }),
              slots.end());
  if (slots.empty()) predicted_.erase(it);
}

void PrefixIndex::LapsePredictions(WorkerState& w, absl::Time now) {
  std::vector<BlockHash> lapsed;
  for (const auto& [key, until] : w.predicted) {
    if (until <= now) lapsed.push_back(key);
  }
  for (const BlockHash& key : lapsed) Unpredict(w, key);
}

void PrefixIndex::Predict(const std::string& worker, std::span<const BlockHash> keys, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end() || !it->second.in_step) return;
  WorkerState& w = it->second;
  const absl::Time until = now + predicted_ttl_;
  for (const BlockHash& key : keys) {
    if (w.keys.contains(key)) continue;
    auto [p, inserted] = w.predicted.try_emplace(key, until);
    auto& slots = predicted_[key];
    if (inserted) {
      slots.emplace_back(w.slot, until);
    } else {
      p->second = until;
      for (auto& s : slots) {
        if (s.first == w.slot) s.second = until;
      }
    }
  }
}

void PrefixIndex::AddKey(WorkerState& w, const BlockHash& key) {
  if (!w.keys.insert(key).second) return;
  holders_[key].push_back(w.slot);
}

void PrefixIndex::RemoveKey(WorkerState& w, const BlockHash& key) {
  if (w.keys.erase(key) == 0) return;
  auto it = holders_.find(key);
  if (it == holders_.end()) return;
  auto& slots = it->second;
  slots.erase(std::remove(slots.begin(), slots.end(), w.slot), slots.end());
  if (slots.empty()) holders_.erase(it);
}

void PrefixIndex::ClearKeys(WorkerState& w) {
  for (const BlockHash& key : w.keys) {
    auto it = holders_.find(key);
    if (it == holders_.end()) continue;
    auto& slots = it->second;
    slots.erase(std::remove(slots.begin(), slots.end(), w.slot), slots.end());
    if (slots.empty()) holders_.erase(it);
  }
  w.keys.clear();
}

bool PrefixIndex::Apply(const std::string& worker, const v1::KvBlockEvents& events, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = workers_.try_emplace(worker);
  WorkerState& w = it->second;
  if (inserted) w.slot = next_slot_++;
  LapsePredictions(w, now);
  if (events.full_set()) {
    // Predictions stay: the requests behind them may still be computing.
    ClearKeys(w);
    for (const v1::BlockKey& k : events.stored()) AddKey(w, BlockKeyFromProto(k));
    w.in_step = true;
    w.next_sequence = events.sequence() + 1;
    w.last_batch = now;
    return false;
  }
  if (!w.in_step || events.sequence() != w.next_sequence) {
    if (w.in_step) {
      TANDEM_LOG(WARNING) << "block events of " << worker << ": batch " << events.sequence() << " where "
                          << w.next_sequence << " was due; asking for the full set";
    }
    // Its keys stay, unused (a stale worker scores by load), until the full
    // set replaces them.
    w.in_step = false;
    return true;
  }
  // Removals first: a key removed and stored again within one batch is
  // reported in both lists and is held.
  for (const v1::BlockKey& k : events.removed()) {
    RemoveKey(w, BlockKeyFromProto(k));
    Unpredict(w, BlockKeyFromProto(k));
  }
  for (const v1::BlockKey& k : events.stored()) {
    AddKey(w, BlockKeyFromProto(k));
    Unpredict(w, BlockKeyFromProto(k));
  }
  w.next_sequence = events.sequence() + 1;
  w.last_batch = now;
  return false;
}

void PrefixIndex::RemoveWorker(const std::string& worker) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker);
  if (it == workers_.end()) return;
  ClearKeys(it->second);
  LapsePredictions(it->second, absl::InfiniteFuture());
  workers_.erase(it);
}

bool PrefixIndex::FreshLocked(const WorkerState& w, absl::Time now) const {
  return w.in_step && now - w.last_batch <= stale_after_;
}

bool PrefixIndex::Fresh(const std::string& worker, absl::Time now) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = workers_.find(worker);
  return it != workers_.end() && FreshLocked(it->second, now);
}

std::vector<int32_t> PrefixIndex::MatchPrefix(std::span<const BlockHash> keys, std::span<const std::string> workers,
                                              absl::Time now) const {
  std::vector<int32_t> matched(workers.size(), 0);
  absl::ReaderMutexLock lock(&mu_);
  // Candidates still matching, by slot, with their position in `workers`.
  std::vector<std::pair<Slot, size_t>> open;
  for (size_t i = 0; i < workers.size(); ++i) {
    auto it = workers_.find(workers[i]);
    if (it != workers_.end() && FreshLocked(it->second, now)) open.emplace_back(it->second.slot, i);
  }
  for (size_t depth = 0; depth < keys.size() && !open.empty(); ++depth) {
    auto held = holders_.find(keys[depth]);
    auto guessed = predicted_.find(keys[depth]);
    auto holds = [&](Slot slot) {
      if (held != holders_.end() && std::find(held->second.begin(), held->second.end(), slot) != held->second.end()) {
        return true;
      }
      if (guessed == predicted_.end()) return false;
      for (const auto& [s, until] : guessed->second) {
        if (s == slot && until > now) return true;
      }
      return false;
    };
    // Those not holding this key end here; the rest match one more block.
    std::erase_if(open, [&](const std::pair<Slot, size_t>& c) { return !holds(c.first); });
    for (const auto& c : open) matched[c.second] = static_cast<int32_t>(depth + 1);
  }
  return matched;
}

size_t PrefixIndex::NumKeys() const {
  absl::ReaderMutexLock lock(&mu_);
  return holders_.size();
}

size_t PrefixIndex::NumPredictedOf(const std::string& worker) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() ? 0 : it->second.predicted.size();
}

size_t PrefixIndex::NumKeysOf(const std::string& worker) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = workers_.find(worker);
  return it == workers_.end() ? 0 : it->second.keys.size();
}

}  // namespace tandem::router
