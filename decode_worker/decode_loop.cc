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

DecodeLoop::DecodeLoop(Engine& engine, KvReservations& reservations, SchedulerOptions options,
                       std::vector<int32_t> eos_ids, DecodeMetrics* metrics)
    : engine_(engine),
      reservations_(reservations),
      metrics_(metrics),
      eos_ids_(std::move(eos_ids)),
      scheduler_(engine.kv_cache(), options) {}

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

absl::Status DecodeLoop::CheckFits(int64_t prompt_len) const {
  const KvCacheManager& kv = engine_.kv_cache();
  if (kv.layout().BlocksForTokens(prompt_len + 1) > kv.num_total_blocks()) {
    return absl::ResourceExhaustedError(absl::StrCat("a prompt of ", prompt_len,
                                                     " tokens needs more KV blocks than this worker's ",
                                                     kv.num_total_blocks()));
  }
  return absl::OkStatus();
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
  scheduler_.Remove(id);  // frees the blocks at once
}

void DecodeLoop::AdmitSubmitted(std::deque<std::pair<SeqId, DecodeJob>> jobs) {
  for (auto& [id, job] : jobs) {
    Active a;
    a.request_id = job.request_id;
    a.stream = job.stream;
    a.stop = std::make_unique<StopChecker>(job.stopping, eos_ids_);
    const bool transferred = !job.blocks.empty();
    if (transferred) {
      // The prefill's token counts towards max_new_tokens; the router only
      // sends requests it did not already end.
      a.stop->OnToken(job.tokens.back(), "");
      absl::Status adopted = engine_.kv_cache().Adopt(id, std::move(job.blocks));
      if (!adopted.ok()) {
        job.stream->Push({SampleResult{}, true, FinishReason::kError, adopted});
        continue;
      }
    }
    Sequence seq;
    seq.id = id;
    seq.tokens = std::move(job.tokens);
    seq.prompt_len = job.prompt_len;
    // With a transfer the prompt's KV is already here; without one the
    // scheduler plans the prompt in chunks like any other gap.
    seq.num_computed = transferred ? job.prompt_len : 0;
    seq.sampling = job.sampling;
    seq.seed = job.seed;
    seq.cache_salt = std::move(job.cache_salt);
    scheduler_.Add(std::move(seq), {job.priority, job.deadline});
    active_.emplace(id, std::move(a));
  }
}

void DecodeLoop::RunStep(const StepPlan& plan) {
  int64_t prompt_tokens = 0;
  for (const ScheduledChunk& c : plan.chunks) {
    if (!(c.num_tokens == 1 && c.samples())) prompt_tokens += c.num_tokens;
  }
  absl::StatusOr<std::vector<StepSample>> sampled = engine_.Step(plan);
  if (!sampled.ok()) {
    TANDEM_LOG(ERROR) << "decode step failed: " << sampled.status();
    std::vector<SeqId> ids;
    for (const auto& [id, a] : active_) ids.push_back(id);
    for (SeqId id : ids) Finish(id, {SampleResult{}, true, FinishReason::kError, sampled.status()});
    return;
  }
  for (StepSample& s : *sampled) {
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
  const int32_t batch = static_cast<int32_t>(plan.chunks.size());
  if (batch != last_batch_) {
    TANDEM_LOG(DEBUG) << "decode batch size " << last_batch_ << " -> " << batch;
    last_batch_ = batch;
  }
  if (metrics_ != nullptr) {
    metrics_->batch_size->Set(batch);
    metrics_->batch_size_per_iteration->Observe(batch);
    metrics_->iterations->Increment();
    metrics_->generated_tokens->Increment(static_cast<double>(sampled->size()));
    if (!plan.preempted.empty()) metrics_->preemptions->Increment(static_cast<double>(plan.preempted.size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  stats_.batch_size = batch;
  stats_.max_batch_size = std::max(stats_.max_batch_size, batch);
  ++stats_.iterations;
  stats_.prompt_tokens_computed += prompt_tokens;
}

void DecodeLoop::Loop() {
  absl::Time next_expiry = absl::Now();
  for (;;) {
    std::deque<std::pair<SeqId, DecodeJob>> jobs;
    std::vector<SeqId> cancels;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (scheduler_.idle() && submitted_.empty() && cancelled_.empty() && !stop_) {
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
    if (!scheduler_.idle()) {
      StepPlan plan = scheduler_.Schedule();
      for (auto& [id, error] : plan.failed) Finish(id, {SampleResult{}, true, FinishReason::kError, error});
      if (!plan.preempted.empty()) {
        TANDEM_LOG(DEBUG) << "KV pool full: preempted " << plan.preempted.size()
                          << " sequence(s) (recomputed later)";
        std::lock_guard<std::mutex> lock(mu_);
        stats_.preemptions += static_cast<int64_t>(plan.preempted.size());
      }
      if (!plan.empty()) {
        RunStep(plan);
      } else if (plan.failed.empty()) {
        // The pool is held by reservations of transfers in flight: they
        // come back as adopted sequences or expire. Wait for a change.
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(2));
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.running = static_cast<int32_t>(scheduler_.num_running());
    stats_.waiting = static_cast<int32_t>(scheduler_.num_waiting());
    if (scheduler_.idle()) {
      stats_.batch_size = 0;
      if (last_batch_ != 0) TANDEM_LOG(DEBUG) << "decode batch size " << last_batch_ << " -> 0";
      last_batch_ = 0;
    }
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
