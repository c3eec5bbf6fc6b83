#include "prefill_worker/prefill_loop.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/util/logging.h"

namespace tandem {
namespace {

PrefillResult Failed(absl::Status status) {
  PrefillResult r;
  r.status = std::move(status);
  return r;
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

PrefillLoop::PrefillLoop(Engine& engine, KvTransport& transport, KvEndpointInfo self,
                         int64_t max_batch_tokens, PrefillMetrics* metrics, TransferCounter* transfers)
    : engine_(engine),
      transport_(transport),
      self_(std::move(self)),
      max_batch_tokens_(max_batch_tokens),
      metrics_(metrics),
      transfers_(transfers) {}

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
    queued_tokens_ += static_cast<int64_t>(job->prompt.size());
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
}

PrefillLoopStats PrefillLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {static_cast<int32_t>(queue_.size()), queued_tokens_, running_};
}

void PrefillLoop::Loop() {
  for (;;) {
    std::vector<std::shared_ptr<PrefillJob>> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) break;
      // FIFO under the token budget; the first job always goes, so a long
      // prompt runs alone rather than never.
      int64_t tokens = 0;
      while (!queue_.empty()) {
        const int64_t n = static_cast<int64_t>(queue_.front()->prompt.size());
        if (!batch.empty() && tokens + n > max_batch_tokens_) break;
        tokens += n;
        queued_tokens_ -= n;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      running_ = static_cast<int32_t>(batch.size());
    }
    std::erase_if(batch, [](const std::shared_ptr<PrefillJob>& j) {
      if (!j->cancelled()) return false;
      j->Complete(Failed(absl::CancelledError("cancelled before prefill started")));
      return true;
    });
    if (!batch.empty()) RunBatch(std::move(batch));
    std::lock_guard<std::mutex> lock(mu_);
    running_ = 0;
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& job : queue_) {
    job->Complete(Failed(absl::UnavailableError("prefill worker is shutting down")));
  }
  queue_.clear();
}

void PrefillLoop::RunBatch(std::vector<std::shared_ptr<PrefillJob>> jobs) {
  const absl::Time start = absl::Now();
  std::vector<Sequence> seqs(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    seqs[i].id = next_id_++;
    seqs[i].tokens = jobs[i]->prompt;
    seqs[i].prompt_len = static_cast<int32_t>(jobs[i]->prompt.size());
    seqs[i].sampling = jobs[i]->sampling;
    seqs[i].seed = jobs[i]->seed;
  }
  std::vector<std::unique_ptr<KvTransfer>> transfers(jobs.size());
  std::vector<absl::Status> errors(jobs.size());

  // Transfers start at layer 0's hook, when the engine has reserved the
  // local blocks; each later layer's K/V is sent as soon as it is written.
  auto on_layer_done = [&](int layer) {
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (!errors[i].ok()) continue;
      if (layer == 0) {
        absl::StatusOr<std::vector<int32_t>> src = engine_.kv_cache().BlockTable(seqs[i].id);
        if (!src.ok()) {
          errors[i] = src.status();
          continue;
        }
        KvTransferSpec spec;
        spec.transfer_id = jobs[i]->destination.transfer_id();
        spec.src_blocks = std::move(*src);
        spec.dst_blocks.assign(jobs[i]->destination.block_ids().begin(),
                               jobs[i]->destination.block_ids().end());
        // Only the prompt's blocks travel (the reservation covers exactly those).
        spec.src_blocks.resize(std::min(spec.src_blocks.size(), spec.dst_blocks.size()));
        spec.deadline = jobs[i]->deadline;
        absl::StatusOr<std::unique_ptr<KvTransfer>> t = transport_.StartTransfer(
            engine_.backend().kv_pool(), self_, jobs[i]->destination.pool(), std::move(spec));
        if (!t.ok()) {
          errors[i] = t.status();
          continue;
        }
        transfers[i] = std::move(*t);
      }
      errors[i] = transfers[i]->SendLayer(layer);
    }
  };

  std::vector<Sequence*> batch;
  for (Sequence& s : seqs) batch.push_back(&s);
  absl::StatusOr<std::vector<SampleResult>> sampled = engine_.Step(batch, on_layer_done);
  if (absl::IsResourceExhausted(sampled.status()) && jobs.size() > 1) {
    // The batch did not fit this worker's scratch pool: one at a time.
    for (Sequence& s : seqs) engine_.Release(s);
    // The abandoned transfers end before their retries start (NCCL sends
    // the rest of an abandoned transfer to keep its pair in order).
    transfers.clear();
    for (auto& job : jobs) RunBatch({job});
    return;
  }
  const absl::Time computed = absl::Now();
  if (metrics_ != nullptr && sampled.ok()) {
    metrics_->prefill_time->Observe(absl::ToDoubleSeconds(computed - start));
    for (const Sequence& s : seqs) metrics_->prompt_tokens->Increment(s.prompt_len);
  }
  for (size_t i = 0; i < jobs.size(); ++i) {
    PrefillResult r;
    r.queue_seconds = absl::ToDoubleSeconds(start - jobs[i]->enqueued);
    r.prefill_seconds = absl::ToDoubleSeconds(computed - start);
    if (!sampled.ok()) {
      r.status = sampled.status();
    } else if (!errors[i].ok()) {
      r.status = errors[i];
      if (transfers[i] != nullptr) {
        // Its end may know more than the failed send did (why the decode
        // side turned a chunk away); it never makes the transfer good.
        if (absl::Status end = transfers[i]->Finish(); !end.ok()) r.status = std::move(end);
      }
    } else {
      r.status = transfers[i]->Finish();
      r.kv_bytes = transfers[i]->bytes_sent();
      if (r.status.ok()) r.kv_completion = transfers[i]->completion();
      r.first_token = (*sampled)[i];
    }
    r.transfer_seconds = absl::ToDoubleSeconds(absl::Now() - computed);
    if (transfers_ != nullptr && transfers[i] != nullptr) transfers_->Count(transfers[i]->transport(), r.status.ok());
    if (metrics_ != nullptr) {
      if (r.status.ok()) {
        metrics_->kv_transfer_time->Observe(r.transfer_seconds);
        metrics_->kv_transfer_bytes->Increment(static_cast<double>(r.kv_bytes));
        // Over the whole transfer, which began with layer 0 during prefill.
        const double span = absl::ToDoubleSeconds(absl::Now() - start);
        if (span > 0) metrics_->kv_transfer_bandwidth->Set(static_cast<double>(r.kv_bytes) / span);
      } else if (sampled.ok()) {
        metrics_->kv_transfers_failed->Increment();
      }
    }
    if (!r.status.ok()) {
      TANDEM_LOG(WARNING) << "prefill of " << jobs[i]->request_id << " failed: " << r.status;
    }
    // The transfer ends (its copies still queued on the GPU waited for)
    // before its source blocks go back and before the router hears of a
    // failure and lets the decode worker reuse the destination blocks.
    transfers[i].reset();
    engine_.Release(seqs[i]);
    jobs[i]->Complete(std::move(r));
  }
}

}  // namespace tandem
