#include "router/worker_registry.h"

#include <algorithm>
#include <limits>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/rpc/cluster_channel.h"
#include "common/util/logging.h"

namespace tandem::router {
namespace {

std::string RoleName(v1::WorkerRole role) {
  switch (role) {
    case v1::WORKER_ROLE_PREFILL: return "prefill";
    case v1::WORKER_ROLE_DECODE: return "decode";
    case v1::WORKER_ROLE_AGGREGATED: return "aggregated";
    default: return "unknown";
  }
}

// "" when the layouts agree, else the first differing field and both values.
std::string LayoutDifference(const v1::KvLayoutSpec& mine, const v1::KvLayoutSpec& theirs) {
  auto diff = [](const char* field, const auto& a, const auto& b) {
    return absl::StrCat(field, " is ", a, " here but ", b, " there");
  };
  if (mine.num_layers() != theirs.num_layers()) return diff("num_layers", mine.num_layers(), theirs.num_layers());
  if (mine.num_kv_heads() != theirs.num_kv_heads()) {
    return diff("num_kv_heads", mine.num_kv_heads(), theirs.num_kv_heads());
  }
  if (mine.head_dim() != theirs.head_dim()) return diff("head_dim", mine.head_dim(), theirs.head_dim());
  if (mine.block_size() != theirs.block_size()) return diff("block_size", mine.block_size(), theirs.block_size());
  if (mine.dtype() != theirs.dtype()) return diff("dtype", mine.dtype(), theirs.dtype());
  return "";
}

}  // namespace

WorkerRegistry::WorkerRegistry(WorkerRegistryOptions options)
    : options_(std::move(options)), id_tag_([] {
        std::random_device entropy;
        return absl::StrCat(absl::Hex(entropy(), absl::kZeroPad8));
      }()) {}

absl::StatusOr<std::string> WorkerRegistry::Register(const v1::WorkerInfo& info) {
  if (info.role() != v1::WORKER_ROLE_PREFILL && info.role() != v1::WORKER_ROLE_DECODE &&
      info.role() != v1::WORKER_ROLE_AGGREGATED) {
    return absl::InvalidArgumentError("worker role must be prefill, decode or aggregated");
  }
  if (info.address().empty() || info.address().find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("bad worker address '", info.address(), "'"));
  }
  if (!options_.model_name.empty() && info.model_name() != options_.model_name) {
    return absl::FailedPreconditionError(absl::StrCat("worker serves model '", info.model_name(),
                                                      "', the router serves '", options_.model_name, "'"));
  }
  absl::MutexLock lock(&mu_);
  for (auto it = workers_.begin(); it != workers_.end();) {
    const WorkerView& w = it->second.view;
    if (w.address == info.address()) {
      TANDEM_LOG(INFO) << "worker " << w.id << " at " << w.address << " registered again";
      if (options_.on_removed) options_.on_removed(w.id);
      workers_.erase(it++);
      continue;
    }
    if (w.info.model_fingerprint() != info.model_fingerprint()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "worker's model fingerprint ", info.model_fingerprint(), " differs from worker ", w.id,
          "'s ", w.info.model_fingerprint(), ": all workers must load the same checkpoint"));
    }
    if (!w.info.engine_numerics().empty() && !info.engine_numerics().empty() &&
        w.info.engine_numerics() != info.engine_numerics()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "engine numerics mismatch with worker ", w.id, " at ", w.address, ": \"", info.engine_numerics(),
          "\" here but \"", w.info.engine_numerics(),
          "\" there (the same --device and --cpu_bf16_activations on every worker give one process's tokens)"));
    }
    if (std::string field = LayoutDifference(info.kv_layout(), w.info.kv_layout()); !field.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("KV layout mismatch with worker ", w.id, " at ",
                                                        w.address, ": ", field));
    }
    ++it;
  }
  Entry e;
  e.view.id = absl::StrCat(RoleName(info.role()), "-", next_id_++, "-", id_tag_);
  e.view.address = info.address();
  e.view.role = info.role();
  e.view.info = info;
  e.view.load.set_kv_blocks_free(info.kv_blocks_total());
  auto channel = DialCluster(info.address());
  if (info.role() == v1::WORKER_ROLE_DECODE || info.role() == v1::WORKER_ROLE_AGGREGATED) {
    e.view.decode_stub = v1::DecodeService::NewStub(channel);
  } else {
    e.view.prefill_stub = v1::PrefillService::NewStub(channel);
  }
  e.last_seen = absl::Now();
  const std::string id = e.view.id;
  TANDEM_LOG(INFO) << "registered " << id << " at " << info.address() << " ("
                   << info.kv_blocks_total() << " KV blocks, transports "
                   << absl::StrJoin(info.transports(), ",") << ")";
  workers_.emplace(id, std::move(e));
  return id;
}

bool WorkerRegistry::Report(const v1::LoadReport& report) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(report.worker_id());
  if (it == workers_.end()) return false;
  it->second.view.load = report;
  it->second.last_seen = absl::Now();
  return true;
}

void WorkerRegistry::Remove(const std::string& id, const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (workers_.erase(id) > 0) {
    if (options_.on_removed) options_.on_removed(id);
    TANDEM_LOG(WARNING) << "took " << id << " out of placement: " << reason;
  }
}

std::vector<std::string> WorkerRegistry::ExpireStale(absl::Time now) {
  std::vector<std::string> expired;
  absl::MutexLock lock(&mu_);
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (now - it->second.last_seen > options_.liveness_timeout) {
      TANDEM_LOG(WARNING) << "worker " << it->first << " at " << it->second.view.address
                          << " stopped reporting; taken out of placement";
      expired.push_back(it->first);
      if (options_.on_removed) options_.on_removed(it->first);
      workers_.erase(it++);
    } else {
      ++it;
    }
  }
  return expired;
}

double WorkerRegistry::Headroom(v1::WorkerRole role) const {
  absl::MutexLock lock(&mu_);
  double best = -1;
  for (const auto& [id, e] : workers_) {
    const WorkerView& w = e.view;
    if (w.role != role || w.load.draining() || w.info.kv_blocks_total() <= 0) continue;
    const double free = static_cast<double>(w.load.kv_blocks_free() - w.inflight_load);
    best = std::max(best, free / static_cast<double>(w.info.kv_blocks_total()));
  }
  return best;
}

absl::StatusOr<WorkerView> WorkerRegistry::Claim(v1::WorkerRole role, int64_t load, Chooser choose) {
  absl::MutexLock lock(&mu_);
  std::vector<Entry*> entries;
  for (auto& [id, e] : workers_) {
    if (e.view.role == role && !e.view.load.draining()) entries.push_back(&e);
  }
  std::sort(entries.begin(), entries.end(), [](const Entry* a, const Entry* b) { return a->view.id < b->view.id; });
  std::vector<const WorkerView*> live;
  live.reserve(entries.size());
  for (const Entry* e : entries) live.push_back(&e->view);
  absl::StatusOr<size_t> chosen = choose(live);
  if (!chosen.ok()) return chosen.status();
  if (*chosen >= entries.size()) return absl::InternalError("placement chose no candidate");
  WorkerView& w = entries[*chosen]->view;
  w.inflight += 1;
  w.inflight_load += load;
  return w;
}

void WorkerRegistry::Done(const std::string& id, int64_t load) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) return;
  it->second.view.inflight = std::max(0, it->second.view.inflight - 1);
  it->second.view.inflight_load = std::max<int64_t>(0, it->second.view.inflight_load - load);
}

std::vector<WorkerView> WorkerRegistry::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<WorkerView> out;
  for (const auto& [id, e] : workers_) out.push_back(e.view);
  return out;
}

std::optional<WorkerView> WorkerRegistry::Find(const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(id);
  if (it == workers_.end()) return std::nullopt;
  return it->second.view;
}

int32_t WorkerRegistry::CountLive(v1::WorkerRole role) const {
  absl::MutexLock lock(&mu_);
  int32_t n = 0;
  for (const auto& [id, e] : workers_) n += e.view.role == role ? 1 : 0;
  return n;
}

}  // namespace tandem::router
