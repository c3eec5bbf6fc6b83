// The memory side of the staged UCX transport: host staging buffers and an
// ordered queue of copies between them and a KV pool. For a GPU pool the
// buffers are pinned (cudaHostAlloc) and the copies run on a CUDA stream
// (device-to-host on the prefill side, host-to-device on the decode side),
// so they overlap compute and the network; for a host pool the buffers
// are plain memory and a copy is a memcpy done at once. The staged
// protocol is the same either way, which is also what lets CI, which has
// no GPU, run it end to end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "common/engine/model_backend.h"

namespace tandem {

class StagingBuffer {
 public:
  virtual ~StagingBuffer() = default;
  virtual char* data() = 0;
  virtual size_t size() const = 0;
};

// Used by one thread at a time (the owner's lock or thread).
class CopyQueue {
 public:
  virtual ~CopyQueue() = default;
  // Enqueues a copy after every copy enqueued before it.
  virtual absl::Status Copy(void* dst, const void* src, size_t bytes) = 0;
  // A mark that is reached once every copy enqueued so far is done.
  virtual absl::StatusOr<uint64_t> Mark() = 0;
  // Whether `mark` was reached; never blocks. An error is a failed copy.
  virtual absl::StatusOr<bool> Reached(uint64_t mark) = 0;
  // Blocks until every enqueued copy is done.
  virtual absl::Status Drain() = 0;
};

// Staging memory and a copy queue suited to `pool` (pinned + CUDA stream on
// the pool's GPU for on_device() pools; UNIMPLEMENTED for those in builds
// without CUDA).
absl::StatusOr<std::unique_ptr<StagingBuffer>> AllocateStaging(KvPoolView& pool, size_t bytes);
absl::StatusOr<std::unique_ptr<CopyQueue>> MakeCopyQueue(KvPoolView& pool);

#ifdef TANDEM_TRANSPORT_CUDA
// The CUDA versions (cuda_staging_copy.cc).
absl::StatusOr<std::unique_ptr<StagingBuffer>> AllocatePinnedStaging(KvPoolView& pool, size_t bytes);
absl::StatusOr<std::unique_ptr<CopyQueue>> MakeCudaCopyQueue(KvPoolView& pool);
#endif

}  // namespace tandem
