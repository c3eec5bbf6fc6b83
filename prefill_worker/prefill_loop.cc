#include "prefill_worker/prefill_loop.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/transport/transport_selection.h"
#include "common/util/logging.h"

namespace tandem {
namespace {

PrefillResult Failed(absl::Status status) {
  PrefillResult r;
  r.status = std::move(status);
  return r;
}

// Transports whose sender writes the destination's memory itself, with
// nothing on the decode side gating each write: these need a KV write hold.
bool WritesOneSided(std::string_view transport) {
  return transport == kTransportUcx || transport == kTransportCudaIpc;
}

}  // namespace

void PrefillJob::Complete(PrefillResult r) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(r);
  }
  cv_.notify_all();
}

std::optional<PrefillResult> PrefillJob::Wait(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return result_.has_value(); });
  return result_;
}

namespace {

SchedulerOptions PrefillSchedulerOptions(SchedulerOptions o) {
  o.reserve_whole = true;
  return o;
}

}  // namespace

PrefillLoop::PrefillLoop(Engine& engine, KvTransport& transport, KvEndpointInfo self, SchedulerOptions options,
                         PrefillMetrics* metrics, TransferCounter* transfers)
    : engine_(engine),
      transport_(transport),
      self_(std::move(self)),
      metrics_(metrics),
      transfers_(transfers),
      scheduler_(engine.kv_cache(), PrefillSchedulerOptions(options)) {}

PrefillLoop::~PrefillLoop() { Stop(); }

void PrefillLoop::Start() { thread_ = std::thread([this] { Loop(); }); }

void PrefillLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PrefillLoop::Submit(std::shared_ptr<PrefillJob> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.queued += 1;
    stats_.queued_tokens += static_cast<int64_t>(job->prompt.size());
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
}

PrefillLoopStats PrefillLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void PrefillLoop::PublishStats() {
  PrefillLoopStats s;
  for (const auto& [id, a] : active_) {
    const Sequence* seq = scheduler_.Find(id);
    if (seq == nullptr) continue;
    if (seq->num_computed > 0) {
      ++s.running;
    } else {
      ++s.queued;
    }
    s.queued_tokens += seq->prompt_len - seq->num_computed;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& job : queue_) {
    ++s.queued;
    s.queued_tokens += static_cast<int64_t>(job->prompt.size());
  }
  stats_ = s;
}

void PrefillLoop::Admit(std::deque<std::shared_ptr<PrefillJob>> jobs) {
  for (auto& job : jobs) {
    if (job->cancelled()) {
      job->Complete(Failed(absl::CancelledError("cancelled before prefill started")));
      continue;
    }
    Sequence seq;
    seq.id = next_id_++;
    seq.tokens = job->prompt;
    seq.prompt_len = static_cast<int32_t>(job->prompt.size());
    seq.sampling = job->sampling;
    seq.seed = job->seed;
    seq.cache_salt = job->cache_salt;
    // Equal priorities go earliest deadline first: the router's call
    // deadline is the request's own.
    scheduler_.Add(std::move(seq), {job->priority, job->deadline});
    Active a;
    a.job = std::move(job);
    active_.emplace(next_id_ - 1, std::move(a));
  }
}

void PrefillLoop::DropCancelled() {
  const absl::Time now = absl::Now();
  std::vector<SeqId> gone;
  for (const auto& [id, a] : active_) {
    if (a.job->cancelled() || now >= a.job->deadline) gone.push_back(id);
  }
  for (SeqId id : gone) {
    Active& a = active_.at(id);
    absl::Status why = a.job->cancelled() ? absl::CancelledError("cancelled during prefill")
                                          : absl::DeadlineExceededError("the request's deadline passed during prefill");
    // The transfer ends (its queued copies waited for) before its source
    // blocks go back.
    a.EndTransfer();
    scheduler_.Remove(id);
    a.job->Complete(Failed(std::move(why)));
    active_.erase(id);
  }
}

void PrefillLoop::Loop() {
  for (;;) {
    std::deque<std::shared_ptr<PrefillJob>> jobs;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty() || !scheduler_.idle(); });
      if (stop_) break;
      jobs.swap(queue_);
    }
    Admit(std::move(jobs));
    DropCancelled();
    if (!scheduler_.idle()) {
      StepPlan plan = scheduler_.Schedule();
      for (auto& [id, error] : plan.failed) {
        active_.at(id).job->Complete(Failed(error));
        active_.erase(id);
      }
      if (!plan.empty()) {
        RunStep(plan);
      } else if (plan.failed.empty()) {
        // Nothing fits until running prompts finish; they are all in
        // flight in this thread, so this only happens with no running
        // work and a pool held elsewhere: wait briefly for a change.
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(2));
      }
    }
    PublishStats();
  }
  for (auto& [id, a] : active_) {
    a.EndTransfer();
    scheduler_.Remove(id);
    a.job->Complete(Failed(absl::UnavailableError("prefill worker is shutting down")));
  }
  active_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& job : queue_) {
    job->Complete(Failed(absl::UnavailableError("prefill worker is shutting down")));
  }
  queue_.clear();
}

void PrefillLoop::RunStep(const StepPlan& plan) {
  const absl::Time start = absl::Now();
  // The chunks that end their prompt start their transfers now: the
  // scheduler reserved every prompt's blocks when it first planned it, and
  // the earlier chunks' KV is in them, so each layer's send covers the
  // whole prompt once the last chunk's layer is written.
  std::vector<Active*> shipping;
  for (const ScheduledChunk& c : plan.chunks) {
    Active& a = active_.at(c.seq->id);
    if (a.first_chunk == absl::InfinitePast()) {
      a.first_chunk = start;
      // The hold's round trip overlaps this and later chunks' compute.
      OpenWriteHold(a);
    } else if (a.transfer == nullptr && a.hold != nullptr && a.hold->renewal_due()) {
      // Nothing written yet, and a long prompt's chunks used up a quarter of the
      // hold's span: take a fresh one, so that the transfer (which may
      // start in this step) has a whole span before the decode side's
      // maximum ends it.
      a.hold.reset();
      OpenWriteHold(a);
    }
    if (!c.samples()) continue;
    shipping.push_back(&a);
    absl::StatusOr<std::vector<int32_t>> src = engine_.kv_cache().BlockTable(c.seq->id);
    if (!src.ok()) {
      a.error = src.status();
      continue;
    }
    KvTransferSpec spec;
    spec.transfer_id = a.job->destination.transfer_id();
    spec.src_blocks = std::move(*src);
    spec.dst_blocks.assign(a.job->destination.block_ids().begin(), a.job->destination.block_ids().end());
    // Only the prompt's blocks travel. The router reserves the prompt plus
    // the first token's slot, so a prompt that ends on a block boundary
    // has one destination block more than our scratch KV fills: the decode
    // worker writes that one itself, and the transfer (which needs as many
    // sources as destinations) must not name it. (A reservation with too
    // few blocks is refused by the decode worker before it adopts them.)
    const size_t n = std::min(spec.src_blocks.size(), spec.dst_blocks.size());
    spec.src_blocks.resize(n);
    spec.dst_blocks.resize(n);
    // The destination's leading blocks it already holds (its cached prefix
    // of this prompt, under the same salt: the same KV) are not sent; they
    // are read-only there. The service checked that they leave some to send.
    const size_t skip = std::min<size_t>(static_cast<size_t>(a.job->destination.num_cached_blocks()), n);
    spec.src_blocks.erase(spec.src_blocks.begin(), spec.src_blocks.begin() + skip);
    spec.dst_blocks.erase(spec.dst_blocks.begin(), spec.dst_blocks.begin() + skip);
    spec.deadline = a.job->deadline;
    spec.finish_timeout = transfer_finish_timeout_;
    absl::StatusOr<std::unique_ptr<KvTransfer>> t = transport_.StartTransfer(
        engine_.backend().kv_pool(), self_, a.job->destination.pool(), std::move(spec));
    if (!t.ok()) {
      a.error = t.status();
      continue;
    }
    a.transfer = std::move(*t);
    // Before its first put.
    a.error = SecureWrites(a);
  }
  auto on_layer_done = [&](int layer) {
    for (Active* a : shipping) {
      if (!a->error.ok() || a->transfer == nullptr) continue;
      // The decode side may have ended the hold (shut down, or its
      // maximum): no put may follow.
      if (a->hold != nullptr) {
        RenewWriteHoldWhileWriting(*a);
        if (absl::Status held = a->hold->Held(); !held.ok()) {
          a->error = HoldFailure(*a, std::move(held));
          continue;
        }
      }
      a->error = a->transfer->SendLayer(layer);
    }
  };
  absl::StatusOr<std::vector<StepSample>> sampled =
      engine_.Step(plan, shipping.empty() ? std::function<void(int)>() : on_layer_done);
  const absl::Time computed = absl::Now();
  if (!sampled.ok()) {
    // A backend failure: every prompt in the step fails (their state is
    // not trusted any more).
    TANDEM_LOG(ERROR) << "prefill step failed: " << sampled.status();
    for (const ScheduledChunk& c : plan.chunks) {
      Active& a = active_.at(c.seq->id);
      a.EndTransfer();
      a.job->Complete(Failed(sampled.status()));
      scheduler_.Remove(c.seq->id);
      active_.erase(c.seq->id);
    }
    return;
  }
  if (metrics_ != nullptr) {
    for (const ScheduledChunk& c : plan.chunks) metrics_->prompt_tokens->Increment(c.num_tokens);
  }
  for (const StepSample& s : *sampled) Complete(s.id, &s.sample, computed);
}

void PrefillLoop::Complete(SeqId id, const SampleResult* first, absl::Time computed) {
  Active& a = active_.at(id);
  PrefillResult r;
  r.queue_seconds = absl::ToDoubleSeconds(a.first_chunk - a.job->enqueued);
  r.prefill_seconds = absl::ToDoubleSeconds(computed - a.first_chunk);
  if (metrics_ != nullptr) metrics_->prefill_time->Observe(r.prefill_seconds);
  if (!a.error.ok()) {
    r.status = a.error;
    if (a.transfer != nullptr) {
      // Its end may know more than the failed send did (why the decode
      // side turned a chunk away); it never makes the transfer good.
      if (absl::Status end = a.transfer->Finish(); !end.ok()) r.status = std::move(end);
    }
  } else {
    r.status = a.transfer->Finish();
    r.kv_bytes = a.transfer->bytes_sent();
    if (r.status.ok()) r.kv_completion = a.transfer->completion();
    r.first_token = *first;
  }
  r.transfer_seconds = absl::ToDoubleSeconds(absl::Now() - computed);
  if (transfers_ != nullptr && a.transfer != nullptr) transfers_->Count(a.transfer->transport(), r.status.ok());
  if (metrics_ != nullptr) {
    if (r.status.ok()) {
      metrics_->kv_transfer_time->Observe(r.transfer_seconds);
      metrics_->kv_transfer_bytes->Increment(static_cast<double>(r.kv_bytes));
      // Over the last chunk's pass, which the transfer overlapped.
      const double span = absl::ToDoubleSeconds(absl::Now() - a.first_chunk);
      if (span > 0) metrics_->kv_transfer_bandwidth->Set(static_cast<double>(r.kv_bytes) / span);
    } else {
      metrics_->kv_transfers_failed->Increment();
    }
  }
  if (!r.status.ok()) {
    TANDEM_LOG(WARNING) << "prefill of " << a.job->request_id << " failed: " << r.status;
  }
  // The transfer ends (its copies still queued on the GPU waited for)
  // before its source blocks go back and before the router hears of a
  // failure and lets the decode worker reuse the destination blocks.
  // Only once it has may the decode worker free the blocks (a release
  // while held waits for the hold's end), or let Decode claim them.
  a.EndTransfer();
  scheduler_.Remove(id);
  a.job->Complete(std::move(r));
  active_.erase(id);
}

void PrefillLoop::OpenWriteHold(Active& a) {
  if (a.hold == nullptr) a.hold = NewWriteHold(a);
}

void PrefillLoop::RenewWriteHoldWhileWriting(Active& a) {
  if (a.renewal != nullptr) {
    // Granted: the old hold's pin is still on, so dropping it now leaves
    // the blocks pinned throughout.
    if (a.renewal->Held().ok()) a.hold = std::move(a.renewal);
    return;
  }
  if (a.hold->renewal_due()) a.renewal = NewWriteHold(a);
}

std::unique_ptr<KvWriteHold> PrefillLoop::NewWriteHold(const Active& a) {
  if (write_holder_ == nullptr) return nullptr;
  const v1::ReserveKvResponse& dest = a.job->destination;
  absl::StatusOr<std::vector<TransportOffer>> offers = OffersOf(dest.pool());
  if (!offers.ok()) return nullptr;  // StartTransfer refuses the descriptor with the reason
  if (std::none_of(offers->begin(), offers->end(), [](const TransportOffer& o) { return WritesOneSided(o.transport); })) {
    return nullptr;
  }
  // Every block the transfer may write: all but the cached prefix, which
  // the decode worker never lets a transfer write.
  const int skip = std::clamp(dest.num_cached_blocks(), 0, dest.block_ids_size());
  std::vector<int32_t> writable;
  for (int i = skip; i < dest.block_ids_size(); ++i) writable.push_back(dest.block_ids(i));
  if (writable.empty()) return nullptr;
  return write_holder_->Open(dest.pool().worker_id(), dest.transfer_id(), writable);
}

absl::Status PrefillLoop::SecureWrites(Active& a) {
  if (!WritesOneSided(a.transfer->transport())) {
    a.hold.reset();
    return absl::OkStatus();
  }
  if (write_holder_ == nullptr) return absl::OkStatus();  // tests without a decode service
  OpenWriteHold(a);
  if (a.hold == nullptr) {
    return absl::FailedPreconditionError("the KV destination names no blocks a transfer may write");
  }
  // A decode worker that does not answer within the transfer's finish
  // timeout is as good as gone (the same bound as for confirming writes).
  const absl::Duration answer_within =
      transfer_finish_timeout_ == absl::InfiniteDuration() ? absl::Seconds(5) : transfer_finish_timeout_;
  absl::Status granted = a.hold->WaitGranted(std::min(a.job->deadline, absl::Now() + answer_within));
  if (granted.ok()) return granted;
  if (absl::IsUnimplemented(granted)) {
    // A decode worker of a version before holds (a rolling upgrade): its
    // pool is written unguarded, as that version always was, rather than
    // every request placed on it failing until it is upgraded too.
    const std::string& worker = a.job->destination.pool().worker_id();
    if (without_holds_.insert(worker).second) {
      TANDEM_LOG(WARNING) << "decode worker " << worker << " takes no KV write holds (an older version): "
                          << "its one-sided KV writes are not guarded against a release mid-transfer";
    }
    a.hold.reset();
    return absl::OkStatus();
  }
  return HoldFailure(a, std::move(granted));
}

absl::Status PrefillLoop::HoldFailure(const Active& a, absl::Status why) const {
  // The reservation is gone because the request is: say so, as the request
  // would end anyway.
  if (a.job->cancelled()) return absl::CancelledError("cancelled during prefill");
  if (absl::Now() >= a.job->deadline) {
    return absl::DeadlineExceededError("the request's deadline passed during prefill");
  }
  if (why.code() == absl::StatusCode::kNotFound) {
    return absl::FailedPreconditionError(
        "the decode worker no longer holds this request's KV reservation (released or expired): its KV was not sent");
  }
  return why;
}

}  // namespace tandem
