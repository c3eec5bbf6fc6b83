// The CUDA objects one CUDA IPC transfer copies with, reused by the
// transfers after it: creating a stream and allocating and filling a block
// table cost tens of microseconds per transfer, as much as a short
// prompt's whole copy. CUDA builds only.
//
// A lane is held by one transfer at a time (CudaCopyLaneLease); the holder
// returns it only once its stream is synchronized (nothing of its copies
// still queued), so the next holder finds an idle stream and may overwrite
// the table buffers at once. The pool is thread-safe; a lane is used by the
// thread of the transfer holding it.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/engine/cuda/device_buffer.h"
#include "common/transport/cuda_handles.h"

namespace tandem {

class CudaCopyLane {
 public:
  // On `device`, which must be current.
  static absl::StatusOr<std::unique_ptr<CudaCopyLane>> Create(int device);
  ~CudaCopyLane();
  CudaCopyLane(const CudaCopyLane&) = delete;
  CudaCopyLane& operator=(const CudaCopyLane&) = delete;

  int device() const { return device_; }
  // Carries the holder's copies and nothing else, so the holder knows they
  // are done when the stream is idle.
  cudaStream_t stream() const { return stream_.get(); }
  // Interprocess-capable (cudaEventInterprocess): the holder records it
  // after its last copy, and its completion record (EncodeCudaIpcCompletion
  // of its handle and this process, made once) goes to the decode worker,
  // which waits for it before adopting the blocks. A later holder
  // re-records it; a decode worker that looks after that waits for the
  // later copies too, which end after the earlier ones.
  cudaEvent_t done() const { return done_.get(); }
  const std::string& completion_record() const { return completion_record_; }
  // The copy kernel's grid cap on this device (KvCopyMaxCtas).
  int max_ctas() const { return max_ctas_; }

  // The (src[i], dst[i]) pairs, interleaved, in this lane's device buffer:
  // written to its pinned staging buffer and copied from there on the
  // lane's stream (no pageable copy, no synchronization), so kernels queued
  // after it on the stream see it. Valid until the lane's next upload, which
  // only its next holder makes. The buffers grow (never shrink) to the
  // largest table seen; growing frees the old device buffer (cudaFree waits
  // for the device), rarely: they start at kMinTablePairs.
  absl::StatusOr<const int32_t*> UploadTable(std::span<const int32_t> src, std::span<const int32_t> dst);

  static constexpr size_t kMinTablePairs = 4096;  // a 64k-token prompt in 16-token blocks

 private:
  CudaCopyLane() = default;
  int device_ = 0;
  int max_ctas_ = 1;
  CudaStream stream_;
  CudaEvent done_;
  std::string completion_record_;
  PinnedBuffer host_table_;
  DeviceBuffer device_table_;
};

class CudaCopyLanePool;

// A lane held by one transfer; returns it to its pool when destroyed. The
// holder synchronizes the lane's stream first, or calls Discard() when that
// failed (the lane is then destroyed, not reused).
class CudaCopyLaneLease {
 public:
  CudaCopyLaneLease() = default;
  CudaCopyLaneLease(CudaCopyLaneLease&&) noexcept = default;
  CudaCopyLaneLease& operator=(CudaCopyLaneLease&& o) noexcept;
  ~CudaCopyLaneLease();

  CudaCopyLane* operator->() const { return lane_.get(); }
  CudaCopyLane* get() const { return lane_.get(); }
  explicit operator bool() const { return lane_ != nullptr; }
  void Discard() { lane_.reset(); }

 private:
  friend class CudaCopyLanePool;
  CudaCopyLaneLease(std::shared_ptr<CudaCopyLanePool> pool, std::unique_ptr<CudaCopyLane> lane)
      : pool_(std::move(pool)), lane_(std::move(lane)) {}
  void Return();
  std::shared_ptr<CudaCopyLanePool> pool_;  // a lease outliving the transport keeps the pool
  std::unique_ptr<CudaCopyLane> lane_;
};

// Idle lanes, per device, owned by one CudaIpcTransport (shared with the
// leases out). Keeps at most kMaxIdle idle lanes; more are destroyed when
// returned.
class CudaCopyLanePool : public std::enable_shared_from_this<CudaCopyLanePool> {
 public:
  static std::shared_ptr<CudaCopyLanePool> Create() {
    return std::shared_ptr<CudaCopyLanePool>(new CudaCopyLanePool());
  }
  ~CudaCopyLanePool();

  // An idle lane on `device` (current): a returned one, or a new one.
  absl::StatusOr<CudaCopyLaneLease> Acquire(int device);

  static constexpr size_t kMaxIdle = 16;

 private:
  friend class CudaCopyLaneLease;
  CudaCopyLanePool() = default;
  void Return(std::unique_ptr<CudaCopyLane> lane);

  std::mutex mu_;
  std::vector<std::unique_ptr<CudaCopyLane>> idle_;
};

}  // namespace tandem
