#include "common/rpc/worker_registration.h"

#include <chrono>
#include <utility>

#include "common/rpc/cluster_channel.h"
#include "common/util/logging.h"

namespace tandem {

WorkerRegistration::WorkerRegistration(std::string router_address, v1::WorkerInfo info,
                                       std::function<v1::LoadReport()> load)
    : router_address_(std::move(router_address)), info_(std::move(info)), load_(std::move(load)) {
  stub_ = v1::WorkerRegistry::NewStub(DialCluster(router_address_));
}

WorkerRegistration::~WorkerRegistration() { Stop(); }

void WorkerRegistration::SetBlockEventSource(BlockEventSource source) { block_events_ = std::move(source); }

void WorkerRegistration::AddBlockEvents(v1::LoadReport* report) {
  if (!block_events_.drain) return;
  v1::KvBlockEvents* batch = report->mutable_block_events();
  batch->set_sequence(++block_event_sequence_);
  std::vector<BlockHash> stored, removed;
  // Drained before the full set is read: an event between the two is in
  // both, and applying a store or removal twice changes nothing.
  block_events_.drain(&stored, &removed);
  if (block_events_resync_) {
    stored = block_events_.cached();
    removed.clear();
    batch->set_full_set(true);
    block_events_resync_ = false;
  }
  for (const BlockHash& k : stored) {
    v1::BlockKey* out = batch->add_stored();
    out->set_hi(k.hi);
    out->set_lo(k.lo);
  }
  for (const BlockHash& k : removed) {
    v1::BlockKey* out = batch->add_removed();
    out->set_hi(k.hi);
    out->set_lo(k.lo);
  }
}

void WorkerRegistration::SetRouterLostCallback(std::function<void(const std::string&)> lost) {
  router_lost_ = std::move(lost);
}

void WorkerRegistration::LoseRouter(const char* why) {
  if (router_instance_.empty()) return;
  const std::string lost = std::exchange(router_instance_, std::string());
  TANDEM_LOG(WARNING) << "router instance " << lost << " at " << router_address_ << " is lost (" << why << ")";
  if (router_lost_) router_lost_(lost);
}

void WorkerRegistration::Start() { thread_ = std::thread([this] { Loop(); }); }

void WorkerRegistration::ReportNow() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    report_now_ = true;
  }
  cv_.notify_all();
}

void WorkerRegistration::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string WorkerRegistration::worker_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return worker_id_;
}

bool WorkerRegistration::Register() {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::RegisterWorkerResponse resp;
  grpc::Status s = stub_->RegisterWorker(&ctx, info_, &resp);
  if (!s.ok()) {
    // A refusal (wrong model, KV layout mismatch) is worth seeing every
    // time; an unreachable router at start is normal while it comes up.
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) {
      TANDEM_LOG(ERROR) << "router " << router_address_ << " refused registration: "
                        << s.error_message();
    }
    return false;
  }
  // Another instance than before: the old one is gone even if no report
  // to it failed (it was replaced between two reports).
  if (resp.router_instance() != router_instance_) LoseRouter("another router instance registered this worker");
  router_instance_ = resp.router_instance();
  std::lock_guard<std::mutex> lock(mu_);
  worker_id_ = resp.worker_id();
  if (resp.report_interval_seconds() > 0) interval_seconds_ = resp.report_interval_seconds();
  TANDEM_LOG(INFO) << "registered with router " << router_address_ << " as " << worker_id_;
  return true;
}

void WorkerRegistration::Loop() {
  double retry = 0.05;
  for (;;) {
    if (!registered_) {
      if (Register()) {
        registered_ = true;
        retry = 0.05;
        // A new registration (perhaps with a restarted router) starts from the full set.
        block_events_resync_ = true;
      } else {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::duration<double>(retry), [this] { return stop_; });
        if (stop_) return;
        retry = std::min(retry * 2, 2.0);
        continue;
      }
    }
    v1::LoadReport report = load_();
    report.set_worker_id(worker_id());
    AddBlockEvents(&report);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::LoadReportResponse resp;
    grpc::Status s = stub_->ReportLoad(&ctx, report, &resp);
    // A batch that may not have arrived is sent again as part of the full set.
    if (!s.ok() || resp.resync_block_events()) block_events_resync_ = true;
    // Refused: nothing listens there any more (killed, or restarting).
    // A slow answer from a live router is not a loss.
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) LoseRouter("its port refused the load report");
    if (s.ok() && !resp.known()) {
      TANDEM_LOG(WARNING) << "router forgot worker " << worker_id() << "; registering again";
      registered_ = false;
      continue;
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::duration<double>(interval_seconds_),
                 [this] { return stop_ || report_now_; });
    if (stop_) return;
    report_now_ = false;
  }
}

}  // namespace tandem
