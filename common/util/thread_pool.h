// A fixed set of worker threads for data-parallel loops (the CPU backend's
// matrix products and attention).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem {

// ParallelFor may be called from one thread at a time (the backend's
// forward pass); it blocks until every chunk is done. The split of [0, n)
// into chunks is a pure function of n and the thread count, and callers
// compute each index independently, so results never depend on timing.
class ThreadPool {
 public:
  // `num_threads` includes the calling thread: 1 runs everything inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) over contiguous chunks covering [0, n), at most one
  // chunk per thread. Chunks smaller than `min_chunk` are not split further.
  void ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                   int64_t min_chunk = 1);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  // The current job, published under mu_ with a new generation number.
  uint64_t generation_ = 0;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_chunks_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace tandem
