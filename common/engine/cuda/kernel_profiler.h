// Opt-in timing of the CUDA forward pass by operation, for finding where a
// step's time goes without a profiler on the machine: with
// TANDEM_CUDA_PROFILE=1 the backend brackets every operation of eagerly
// launched passes with CUDA events and logs per-operation totals (decode
// and prefill passes apart) when it is destroyed. Graph replays are not
// split (run with graphs off to see a decode step's parts). Off, every
// call is a no-op.
#pragma once

#include <cuda_runtime.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/util/logging.h"

namespace tandem {

class KernelProfiler {
 public:
  KernelProfiler() {
    const char* env = std::getenv("TANDEM_CUDA_PROFILE");
    enabled_ = env != nullptr && std::string(env) == "1";
  }
  ~KernelProfiler() {
    if (!enabled_) return;
    for (const auto& [kind, ops] : totals_) {
      double sum = 0;
      for (const auto& [op, ms] : ops) sum += ms;
      TANDEM_LOG(INFO) << "profile " << kind << ": " << passes_[kind] << " passes, " << sum << " ms";
      for (const auto& [op, ms] : ops) {
        TANDEM_LOG(INFO) << "  " << op << ": " << ms << " ms (" << 100.0 * ms / sum << "%)";
      }
    }
    for (auto& [op, e] : marks_) cudaEventDestroy(e);
    for (cudaEvent_t e : pool_) cudaEventDestroy(e);
  }
  KernelProfiler(const KernelProfiler&) = delete;
  KernelProfiler& operator=(const KernelProfiler&) = delete;

  bool enabled() const { return enabled_ && !capturing_; }
  void set_capturing(bool c) { capturing_ = c; }

  // The time from this mark to the next one is charged to `op`.
  void Mark(cudaStream_t stream, const char* op) {
    if (!enabled()) return;
    cudaEvent_t e = nullptr;
    if (!pool_.empty()) {
      e = pool_.back();
      pool_.pop_back();
    } else if (cudaEventCreate(&e) != cudaSuccess) {
      return;
    }
    cudaEventRecord(e, stream);
    marks_.emplace_back(op, e);
  }
  // Closes the pass (its last mark must be "end") and accumulates it.
  void EndPass(const std::string& kind) {
    if (!enabled() || marks_.empty()) return;
    cudaEventSynchronize(marks_.back().second);
    for (size_t i = 0; i + 1 < marks_.size(); ++i) {
      float ms = 0;
      cudaEventElapsedTime(&ms, marks_[i].second, marks_[i + 1].second);
      totals_[kind][marks_[i].first] += ms;
    }
    ++passes_[kind];
    for (auto& [op, e] : marks_) pool_.push_back(e);
    marks_.clear();
  }

 private:
  bool enabled_ = false, capturing_ = false;
  std::vector<std::pair<std::string, cudaEvent_t>> marks_;
  std::vector<cudaEvent_t> pool_;
  std::map<std::string, std::map<std::string, double>> totals_;
  std::map<std::string, int64_t> passes_;
};

}  // namespace tandem
