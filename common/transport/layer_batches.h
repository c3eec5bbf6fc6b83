// The layers of one transfer that were sent but not yet handed to the GPU,
// and how they are grouped into copy launches. Pure C++ (no CUDA), used by
// the CUDA IPC transport (cuda_ipc_transport.cc) and tested on its own.
//
// Why: a launch costs microseconds of host time and a drain/fill of the
// GPU; when SendLayer calls come faster than the copies finish (a short
// burst, as in the transfer bench, or layers sent after the pass), the
// layers that arrive while the copy stream is busy wait here and go out
// together in one launch. Any set of layers may be pending, in any order of
// arrival; a launch takes a list of layers, not a range, so gaps cost
// nothing.
//
// Not thread-safe: owned by one transfer, touched only by the thread that
// calls its SendLayer and Finish (KvTransfer is used by one thread).
#pragma once

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

}  // namespace tandem
