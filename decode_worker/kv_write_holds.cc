#include "decode_worker/kv_write_holds.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/request/request_validation.h"
#include "common/rpc/status_convert.h"
#include "common/util/logging.h"

namespace tandem {

KvWriteHolds::KvWriteHolds(KvReservations& reservations, absl::Duration max_hold)
    : reservations_(reservations), max_hold_(max_hold), watchdog_([this] { Watchdog(); }) {}

KvWriteHolds::~KvWriteHolds() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  watchdog_.join();
}

void KvWriteHolds::SetMetrics(MetricsServer& server) {
  auto& holds = prometheus::BuildCounter()
                    .Name("tandem_kv_write_holds_total")
                    .Help("Holds of one-sided KV writers on reservations (HoldKvWrite), by outcome: granted, "
                          "refused (the reservation was gone or the blocks not its own), expired (ended by "
                          "--kv_write_hold_max_seconds).")
                    .Labels(server.const_labels())
                    .Register(server.registry());
  granted_ = &holds.Add({{"outcome", "granted"}});
  refused_ = &holds.Add({{"outcome", "refused"}});
  expired_ = &holds.Add({{"outcome", "expired"}});
  active_gauge_ = &prometheus::BuildGauge()
                       .Name("tandem_kv_write_holds_active")
                       .Help("Holds of one-sided KV writers open now (their reservations' blocks stay pinned).")
                       .Labels(server.const_labels())
                       .Register(server.registry())
                       .Add({});
  outlived_release_counter_ =
      &prometheus::BuildCounter()
           .Name("tandem_kv_write_holds_outlived_release_total")
           .Help("Holds whose reservation was released or expired while held (a cancel, a deadline, a lost "
                 "router): its blocks went back to the pool only when the writer's hold ended.")
           .Labels(server.const_labels())
           .Register(server.registry())
           .Add({});
}

grpc::Status KvWriteHolds::Serve(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriterInterface<v1::KvWriteHoldResponse, v1::KvWriteHoldRequest>* stream) {
  v1::KvWriteHoldRequest req;
  if (!stream->Read(&req)) return grpc::Status(grpc::StatusCode::CANCELLED, "the hold ended before it was asked for");
  if (req.transfer_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a KV write hold names no transfer");
  }
  if (absl::Status s = ValidateRequestId(req.transfer_id()); !s.ok()) return ToGrpcStatus(s);
  if (req.dst_blocks().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a KV write hold names no blocks");
  }
  const std::vector<int32_t> blocks(req.dst_blocks().begin(), req.dst_blocks().end());
  if (absl::Status pinned = reservations_.PinForWrite(req.transfer_id(), blocks); !pinned.ok()) {
    if (refused_ != nullptr) refused_->Increment();
    return ToGrpcStatus(pinned);
  }
  // Pinned: every path below ends in the one Unpin.
  if (granted_ != nullptr) granted_->Increment();
  if (active_gauge_ != nullptr) active_gauge_->Increment();
  const absl::Duration max_hold = max_hold_;
  {
    absl::MutexLock lock(&mu_);
    watched_[ctx] = Watched{absl::Now() + max_hold};
    rescan_ = true;  // its expiry may come before the watchdog's next wake
  }
  bool extra_request = false;
  v1::KvWriteHoldResponse granted;
  granted.set_max_hold_seconds(absl::ToDoubleSeconds(max_hold));
  if (stream->Write(granted)) {
    // Blocks until the prefill worker half-closes, its connection breaks,
    // or the watchdog cancels the call. A further request is not part of
    // the protocol: it ends the hold too.
    v1::KvWriteHoldRequest more;
    extra_request = stream->Read(&more);
  }
  const bool expired = Unwatch(ctx);
  // Still pinned here, so a reservation unknown to WritableBlocks is one
  // released or expired meanwhile, its blocks held back by this pin alone.
  if (!reservations_.WritableBlocks(req.transfer_id()).ok()) {
    outlived_release_.fetch_add(1);
    if (outlived_release_counter_ != nullptr) outlived_release_counter_->Increment();
  }
  reservations_.Unpin(req.transfer_id());
  if (active_gauge_ != nullptr) active_gauge_->Decrement();
  if (expired) {
    if (expired_ != nullptr) expired_->Increment();
    TANDEM_LOG(WARNING) << "KV write hold on transfer " << req.transfer_id() << " ended after "
                        << absl::FormatDuration(max_hold) << " (--kv_write_hold_max_seconds): its writer hung";
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                        absl::StrCat("the KV write hold passed its maximum of ", absl::FormatDuration(max_hold)));
  }
  if (extra_request) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a KV write hold takes one request");
  }
  return grpc::Status::OK;
}

bool KvWriteHolds::Unwatch(grpc::ServerContext* ctx) {
  absl::MutexLock lock(&mu_);
  auto it = watched_.find(ctx);
  const bool expired = it != watched_.end() && it->second.expired;
  if (it != watched_.end()) watched_.erase(it);
  return expired;
}

int KvWriteHolds::active() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(watched_.size());
}

void KvWriteHolds::Watchdog() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    const absl::Time now = absl::Now();
    absl::Time next = now + absl::Seconds(1);  // also how soon a stop is seen
    for (auto& [ctx, w] : watched_) {
      if (w.expired) continue;
      if (w.expires <= now) {
        // Still registered, so its handler has not left Serve: the context
        // is alive. The handler's Read returns false and it unpins.
        w.expired = true;
        ctx->TryCancel();
      } else {
        next = std::min(next, w.expires);
      }
    }
    rescan_ = false;
    auto stop_or_rescan = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || rescan_; };
    mu_.AwaitWithDeadline(absl::Condition(&stop_or_rescan), next);
  }
}

}  // namespace tandem
