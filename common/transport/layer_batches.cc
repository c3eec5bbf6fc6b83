#include "common/transport/layer_batches.h"

#include <algorithm>

namespace tandem {

void PendingLayers::Add(int layer) {
  if (layer < 0 || layer >= num_layers() || pending_[static_cast<size_t>(layer)]) return;
  pending_[static_cast<size_t>(layer)] = true;
  ++count_;
}

std::vector<std::vector<int32_t>> PendingLayers::Take(int max_per_launch) {
  std::vector<std::vector<int32_t>> launches;
  if (count_ == 0) return launches;
  if (max_per_launch <= 0) max_per_launch = 1;
  for (int l = 0; l < num_layers(); ++l) {
    if (!pending_[static_cast<size_t>(l)]) continue;
    pending_[static_cast<size_t>(l)] = false;
    if (launches.empty() || static_cast<int>(launches.back().size()) == max_per_launch) {
      launches.emplace_back();
      launches.back().reserve(static_cast<size_t>(std::min(max_per_launch, count_)));
    }
    launches.back().push_back(l);
    --count_;
  }
  return launches;
}

bool LaunchTiming::Sent(int layer, Clock::time_point now) {
  if (layer >= 0 && static_cast<size_t>(layer) < sent_.size() && !sent_[static_cast<size_t>(layer)]) {
    sent_[static_cast<size_t>(layer)] = true;
    ++sent_count_;
  }
  const Clock::time_point since = holding_ ? hold_since_ : last_call_;
  last_call_ = now;
  if (sent_count_ == static_cast<int>(sent_.size()) || now - since >= kWindow) {
    holding_ = false;
    return true;
  }
  if (!holding_) {
    holding_ = true;
    hold_since_ = now;
  }
  return false;
}

}  // namespace tandem
