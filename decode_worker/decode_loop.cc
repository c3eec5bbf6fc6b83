#include "decode_worker/decode_loop.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/util/logging.h"

namespace tandem {

void DecodeStream::Push(DecodeEvent e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  cv_.notify_one();
}

std::vector<DecodeEvent> DecodeStream::Take(absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [this] { return !events_.empty(); });
  std::vector<DecodeEvent> out;
  out.swap(events_);
  return out;
}

DecodeLoop::DecodeLoop(Engine& engine, KvReservations& reservations, BatcherOptions options,
                       std::vector<int32_t> eos_ids, DecodeMetrics* metrics)
    : engine_(engine),
      reservations_(reservations),
      metrics_(metrics),
      eos_ids_(std::move(eos_ids)),
      batcher_(engine, options) {}

DecodeLoop::~DecodeLoop() { Stop(); }

void DecodeLoop::Start() { thread_ = std::thread([this] { Loop(); }); }

void DecodeLoop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

SeqId DecodeLoop::Submit(DecodeJob job) {
  SeqId id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
    submitted_.emplace_back(id, std::move(job));
  }
  cv_.notify_all();
  return id;
}

void DecodeLoop::Cancel(SeqId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_.push_back(id);
  }
  cv_.notify_all();
}

DecodeLoopStats DecodeLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void DecodeLoop::Finish(SeqId id, DecodeEvent e) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  e.finished = true;
  it->second.stream->Push(std::move(e));
  active_.erase(it);
  batcher_.Remove(id);  // frees the blocks at once
}

void DecodeLoop::AdmitSubmitted(std::deque<std::pair<SeqId, DecodeJob>> jobs) {
  for (auto& [id, job] : jobs) {
    Active a;
    a.request_id = job.request_id;
    a.stream = job.stream;
    a.stop = std::make_unique<StopChecker>(job.stopping, eos_ids_);
    // The prefill's token counts towards max_new_tokens; the router only
    // sends requests it did not already end.
    a.stop->OnToken(job.tokens.back(), "");
    absl::Status adopted = engine_.kv_cache().Adopt(id, std::move(job.blocks));
    if (!adopted.ok()) {
      job.stream->Push({SampleResult{}, true, FinishReason::kError, adopted});
      continue;
    }
    Sequence seq;
    seq.id = id;
    seq.tokens = std::move(job.tokens);
    seq.prompt_len = job.prompt_len;
    seq.num_computed = job.prompt_len;  // the prompt's KV arrived by transfer
    seq.sampling = job.sampling;
    seq.seed = job.seed;
    batcher_.Add(std::move(seq), job.priority);
    active_.emplace(id, std::move(a));
  }
}

void DecodeLoop::Loop() {
  absl::Time next_expiry = absl::Now();
  int32_t last_batch = 0;
  for (;;) {
    std::deque<std::pair<SeqId, DecodeJob>> jobs;
    std::vector<SeqId> cancels;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (batcher_.idle() && submitted_.empty() && cancelled_.empty() && !stop_) {
        cv_.wait_for(lock, std::chrono::milliseconds(100));
      }
      if (stop_) break;
      jobs.swap(submitted_);
      cancels.swap(cancelled_);
    }
    AdmitSubmitted(std::move(jobs));
    for (SeqId id : cancels) {
      Finish(id, {SampleResult{}, true, FinishReason::kCancelled, absl::CancelledError("cancelled")});
    }
    if (absl::Now() >= next_expiry) {
      reservations_.ExpireStale(absl::Now());
      next_expiry = absl::Now() + absl::Milliseconds(200);
    }
    if (batcher_.idle()) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.running = stats_.waiting = stats_.batch_size = 0;
      continue;
    }

    absl::StatusOr<ContinuousBatcher::Iteration> it = batcher_.Step();
    if (!it.ok()) {
      TANDEM_LOG(ERROR) << "decode step failed: " << it.status();
      std::vector<SeqId> ids;
      for (const auto& [id, a] : active_) ids.push_back(id);
      for (SeqId id : ids) Finish(id, {SampleResult{}, true, FinishReason::kError, it.status()});
      continue;
    }
    for (auto& [id, error] : it->failed) Finish(id, {SampleResult{}, true, FinishReason::kError, error});
    for (ContinuousBatcher::Sampled& s : it->sampled) {
      auto a = active_.find(s.id);
      if (a == active_.end()) continue;
      StopDecision d = a->second.stop->OnToken(s.sample.token, "");
      DecodeEvent e{std::move(s.sample), d.finished, d.reason, absl::OkStatus()};
      if (d.finished) {
        Finish(s.id, std::move(e));
      } else {
        a->second.stream->Push(std::move(e));
      }
    }
    if (metrics_ != nullptr) {
      metrics_->batch_size->Set(it->batch_size);
      metrics_->batch_size_per_iteration->Observe(it->batch_size);
      metrics_->iterations->Increment();
      metrics_->generated_tokens->Increment(static_cast<double>(it->sampled.size()));
      if (it->preemptions > 0) metrics_->preemptions->Increment(it->preemptions);
    }
    if (it->preemptions > 0) {
      TANDEM_LOG(DEBUG) << "KV pool full: preempted " << it->preemptions << " sequence(s) (recomputed later)";
    }
    if (it->batch_size != last_batch) {
      TANDEM_LOG(DEBUG) << "decode batch size " << last_batch << " -> " << it->batch_size;
      last_batch = it->batch_size;
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = static_cast<int32_t>(batcher_.num_running());
    stats_.waiting = static_cast<int32_t>(batcher_.num_waiting());
    stats_.batch_size = it->batch_size;
    stats_.max_batch_size = std::max(stats_.max_batch_size, it->batch_size);
    ++stats_.iterations;
    stats_.preemptions += it->preemptions;
  }
  // Shutting down: nothing more will be computed for what is left.
  std::vector<SeqId> ids;
  for (const auto& [id, a] : active_) ids.push_back(id);
  for (SeqId id : ids) {
    Finish(id, {SampleResult{}, true, FinishReason::kError,
                absl::UnavailableError("decode worker is shutting down")});
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, job] : submitted_) {
    engine_.kv_cache().allocator().Release(job.blocks).IgnoreError();
    job.stream->Push({SampleResult{}, true, FinishReason::kError,
                      absl::UnavailableError("decode worker is shutting down")});
  }
  submitted_.clear();
}

}  // namespace tandem
