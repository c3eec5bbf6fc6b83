// The layers of one transfer that were sent but not yet handed to the GPU,
// how they are grouped into copy launches, and when a SendLayer launches
// them. Pure C++ (no CUDA), used by the CUDA IPC transport
// (cuda_ipc_transport.cc) and tested on its own.
//
// Why: a launch costs microseconds of host time, its start latency and a
// drain/fill of the GPU; when SendLayer calls come in a burst (the transfer
// bench, or layers sent after the pass), the layers wait here and go out
// together in one launch. Any set of layers may be pending, in any order of
// arrival; a launch takes a list of layers, not a range, so gaps cost
// nothing.
//
// Not thread-safe: owned by one transfer, touched only by the thread that
// calls its SendLayer and Finish (KvTransfer is used by one thread).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace tandem {

class PendingLayers {
 public:
  explicit PendingLayers(int num_layers = 0) : pending_(static_cast<size_t>(num_layers > 0 ? num_layers : 0)) {}

  int num_layers() const { return static_cast<int>(pending_.size()); }
  // Marks `layer` (0 <= layer < num_layers(), the caller checks) as sent. A
  // layer sent again while pending stays one pending layer (copied once).
  void Add(int layer);
  bool empty() const { return count_ == 0; }
  int size() const { return count_; }

  // Every pending layer, ascending, in groups of at most `max_per_launch`
  // (> 0), as few groups as that allows; the pending set is empty after.
  std::vector<std::vector<int32_t>> Take(int max_per_launch);

 private:
  std::vector<bool> pending_;
  int count_ = 0;
};

// When SendLayer launches the pending layers (time, not GPU state: the
// decision needs no CUDA call). A layer is held while the calls come in a
// burst and launched as soon as one of these holds:
//   - every layer of the transfer has been sent: nothing can join it, so
//     waiting longer only delays the copy (in the prefill worker this is
//     the last layer, launched in its own hook as before: the copies still
//     end right after the forward pass);
//   - the call comes kWindow or more after the previous one (the caller
//     paces the layers, like a forward pass at 0.4-9 ms per layer: waiting
//     for the next call would delay this copy by a whole layer);
//   - the oldest held layer has waited kWindow (a slow burst does not keep
//     the GPU idle for longer than that).
// So a burst of all layers is one launch at its last call instead of a
// lone first-layer kernel followed by a few catch-up launches, and a
// paced transfer launches every layer at once except the first, which
// rides with the second (the first call has no previous one to be spaced
// from; its copy still runs under the next layers' compute). No CUDA state
// is consulted: the copies of every launch queue on the lane's stream in
// order, so launching while earlier copies run is safe.
class LaunchTiming {
 public:
  using Clock = std::chrono::steady_clock;
  // Long enough for a burst of calls with no CUDA work in between (well
  // under a microsecond each), far shorter than a forward pass's layer.
  static constexpr Clock::duration kWindow = std::chrono::microseconds(20);

  // `start`: when the transfer began (the first call is measured from it).
  LaunchTiming(int num_layers, Clock::time_point start)
      : sent_(static_cast<size_t>(num_layers > 0 ? num_layers : 0)), last_call_(start) {}

  // `layer` (0 <= layer < num_layers, the caller checks) was sent at `now`;
  // true: launch every pending layer now.
  bool Sent(int layer, Clock::time_point now);

 private:
  std::vector<bool> sent_;
  int sent_count_ = 0;
  bool holding_ = false;           // some layer was held by an earlier call
  Clock::time_point hold_since_;   // when the oldest held layer was sent
  Clock::time_point last_call_;    // the previous call (or the start)
};

}  // namespace tandem
