#include "router/placement_policy.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace tandem::router {
namespace {

std::string RoleWord(v1::WorkerRole role) {
  switch (role) {
    case v1::WORKER_ROLE_PREFILL: return "prefill";
    case v1::WORKER_ROLE_DECODE: return "decode";
    case v1::WORKER_ROLE_AGGREGATED: return "aggregated";
    default: return "unknown";
  }
}

bool Excluded(const std::vector<std::string>& exclude, const std::string& id) {
  return std::find(exclude.begin(), exclude.end(), id) != exclude.end();
}

// Free KV blocks after what the router placed since the last report.
int64_t FreeBlocks(const WorkerView& w) { return w.load.kv_blocks_free() - w.inflight_load; }

// How busy a decode or aggregated worker would be with the request: the
// larger of its KV pool's use and its batch's fill (running, waiting and
// placed since its report, over --max_batch_size), in [0, 1]. Blocks held
// by running sequences cost a worker little until its pool or its batch
// fills; a full one delays the request as much as computing all of it.
double LoadFraction(const WorkerView& w, int64_t blocks_needed) {
  const double total = static_cast<double>(std::max<int64_t>(1, w.info.kv_blocks_total()));
  const double kv = static_cast<double>(w.info.kv_blocks_total() - FreeBlocks(w) + blocks_needed) / total;
  const double batch = static_cast<double>(w.load.running_requests() + w.load.waiting_requests() + w.inflight + 1) /
                       static_cast<double>(std::max(1, w.info.max_batch_size()));
  return std::clamp(std::max(kv, batch), 0.0, 1.0);
}

}  // namespace

PlacementOptions PlacementOptionsFrom(const RouterConfig& config) {
  PlacementOptions o;
  o.mode = config.placement;
  o.prefix_weight = config.placement_prefix_weight;
  o.load_weight = config.placement_load_weight;
  return o;
}

PlacementPolicy::PlacementPolicy(PlacementOptions options, WorkerRegistry& registry, PrefixIndex* index)
    : options_(options), registry_(registry), index_(index) {}

void PlacementPolicy::Predict(const WorkerView& worker, std::span<const BlockHash> keys) {
  if (options_.mode != PlacementMode::kCacheAware || index_ == nullptr || keys.empty()) return;
  index_->Predict(worker.id, keys, absl::Now());
}

std::vector<int32_t> PlacementPolicy::Matches(std::span<const BlockHash> keys,
                                              std::span<const WorkerView* const> candidates) const {
  if (options_.mode != PlacementMode::kCacheAware || index_ == nullptr || keys.empty()) {
    return std::vector<int32_t>(candidates.size(), 0);
  }
  std::vector<std::string> ids;
  ids.reserve(candidates.size());
  for (const WorkerView* w : candidates) ids.push_back(w->id);
  return index_->MatchPrefix(keys, ids, absl::Now());
}

absl::StatusOr<WorkerView> PlacementPolicy::PickDecode(std::span<const BlockHash> keys, int64_t blocks_needed,
                                                       const std::vector<std::string>& exclude, v1::WorkerRole role) {
  int32_t cached = 0;
  auto choose = [&](std::span<const WorkerView* const> live) -> absl::StatusOr<size_t> {
    const std::string kind = RoleWord(role);
    if (live.empty()) return absl::UnavailableError(absl::StrCat("no ", kind, " worker is available"));
    const std::vector<int32_t> matched = Matches(keys, live);
    int64_t most_free = 0;
    // Those with room, in id order (round robin walks them).
    std::vector<size_t> fit;
    for (size_t i = 0; i < live.size(); ++i) {
      if (Excluded(exclude, live[i]->id)) continue;
      most_free = std::max(most_free, FreeBlocks(*live[i]));
      if (FreeBlocks(*live[i]) >= blocks_needed) fit.push_back(i);
    }
    if (fit.empty()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          exclude.empty() ? "no " : "no other ", kind, " worker has room", ": the request needs ", blocks_needed,
          " KV blocks, the most free on any ", kind, " worker is ", most_free));
    }
    size_t best = fit.front();
    switch (options_.mode) {
      case PlacementMode::kRoundRobin:
        best = fit[round_robin_.fetch_add(1) % fit.size()];
        break;
      case PlacementMode::kLoad:
        for (size_t i : fit) {
          const WorkerView& w = *live[i];
          const WorkerView& b = *live[best];
          if (FreeBlocks(w) > FreeBlocks(b) ||
              (FreeBlocks(w) == FreeBlocks(b) && w.load.running_requests() < b.load.running_requests())) {
            best = i;
          }
        }
        break;
      case PlacementMode::kCacheAware: {
        double best_cost = std::numeric_limits<double>::infinity();
        for (size_t i : fit) {
          const WorkerView& w = *live[i];
          const double lacking = static_cast<double>(std::max<int64_t>(0, blocks_needed - matched[i]));
          const double cost = options_.prefix_weight * lacking +
                              options_.load_weight * static_cast<double>(blocks_needed) * LoadFraction(w, blocks_needed);
          if (cost < best_cost ||
              (cost == best_cost && w.load.running_requests() < live[best]->load.running_requests())) {
            best = i;
            best_cost = cost;
          }
        }
        break;
      }
    }
    cached = matched[best];
    return best;
  };
  absl::StatusOr<WorkerView> w = registry_.Claim(role, blocks_needed, choose);
  if (!w.ok()) return w;
  w->cached_prefix_blocks = cached;
  // It receives (or computes) every block of the prompt.
  Predict(*w, keys);
  return w;
}

absl::StatusOr<WorkerView> PlacementPolicy::PickPrefill(std::span<const BlockHash> keys, int64_t prompt_tokens) {
  int32_t cached = 0;
  auto choose = [&](std::span<const WorkerView* const> live) -> absl::StatusOr<size_t> {
    if (live.empty()) return absl::UnavailableError("no prefill worker is available");
    const std::vector<int32_t> matched = Matches(keys, live);
    auto queue = [](const WorkerView& w) { return w.load.queued_prompt_tokens() + w.inflight_load; };
    size_t best = 0;
    switch (options_.mode) {
      case PlacementMode::kRoundRobin:
        best = round_robin_.fetch_add(1) % live.size();
        break;
      case PlacementMode::kLoad:
        for (size_t i = 1; i < live.size(); ++i) {
          if (queue(*live[i]) < queue(*live[best])) best = i;
        }
        break;
      case PlacementMode::kCacheAware: {
        // In blocks, so the weights mean what they mean for decode workers.
        const double block = std::max(1, live[0]->info.kv_layout().block_size());
        double best_cost = std::numeric_limits<double>::infinity();
        for (size_t i = 0; i < live.size(); ++i) {
          const double lacking =
              std::max(0.0, static_cast<double>(prompt_tokens) - static_cast<double>(matched[i]) * block) / block;
          const double cost = options_.prefix_weight * lacking +
                              options_.load_weight * static_cast<double>(queue(*live[i])) / block;
          if (cost < best_cost) {
            best = i;
            best_cost = cost;
          }
        }
        break;
      }
    }
    cached = matched[best];
    return best;
  };
  absl::StatusOr<WorkerView> w = registry_.Claim(v1::WORKER_ROLE_PREFILL, prompt_tokens, choose);
  if (!w.ok()) return w;
  w->cached_prefix_blocks = cached;
  Predict(*w, keys);
  return w;
}

int32_t PlacementPolicy::BestCachedPrefix(std::span<const BlockHash> keys, v1::WorkerRole role) const {
  std::vector<WorkerView> all = registry_.Snapshot();
  std::vector<const WorkerView*> live;
  for (const WorkerView& w : all) {
    if (w.role == role && !w.load.draining()) live.push_back(&w);
  }
  int32_t best = 0;
  for (int32_t m : Matches(keys, live)) best = std::max(best, m);
  return best;
}

}  // namespace tandem::router
