// How a host thread waits for GPU work it expects to end soon (the CUDA
// IPC transport's Finish): polls about a microsecond apart at first, then
// sleeps that grow with the time already waited. Plain C++, tested on its
// own (tests/common/transport/poll_backoff_test.cc).
//
// Why not sleep from the start: a sleep costs its timer slack (50 us by
// default on Linux) on top of its length, as much as a short prompt's
// whole copy (64 MiB, ~40 us on an H200). Why not yield in a loop: with
// nothing else runnable, yield returns at once and the loop floods the
// driver with queries (each takes its locks). The spin is bounded: work
// still running after kSpinFor is long or queued behind other kernels, and
// waking up an eighth of the wait late costs little then.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace tandem {

class PollBackoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kSpinFor = std::chrono::milliseconds(2);
  static constexpr Clock::duration kSpinGap = std::chrono::microseconds(1);
  static constexpr Clock::duration kMinSleep = std::chrono::microseconds(20);
  static constexpr Clock::duration kMaxSleep = std::chrono::microseconds(500);

  struct Step {
    bool sleep = false;           // false: busy-wait (the thread keeps its core)
    Clock::duration length{};
  };
  // What to wait before the next poll, `waited` into the wait.
  static Step StepAt(Clock::duration waited) {
    if (waited < kSpinFor) return {false, kSpinGap};
    return {true, std::clamp<Clock::duration>(waited / 8, kMinSleep, kMaxSleep)};
  }

  explicit PollBackoff(Clock::time_point start = Clock::now()) : start_(start) {}

  // Waits StepAt(time since the start) before the caller's next poll.
  void Wait() const {
    const Clock::time_point now = Clock::now();
    const Step step = StepAt(now - start_);
    if (step.sleep) {
      std::this_thread::sleep_for(step.length);
      return;
    }
    while (Clock::now() - now < step.length) Relax();
  }

 private:
  static void Relax() {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  Clock::time_point start_;
};

}  // namespace tandem
