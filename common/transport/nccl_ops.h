// The few NCCL and CUDA calls the NCCL KV transport makes, behind an
// interface: nccl_ops_cuda.cc implements it with libnccl and the CUDA
// runtime (NCCL builds only); tests put a fake behind it that moves bytes
// in memory and can inject an asynchronous error or a hang, so the
// transport's caching, ordering and failure paths are tested on machines
// without GPUs. Handles are opaque pointers owned by the caller, which
// releases each exactly once (RAII in nccl_transport.cc).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace tandem {

using NcclCommHandle = void*;
using GpuStreamHandle = void*;
using GpuEventHandle = void*;

enum class NcclCommState { kReady, kInProgress, kFailed };

class NcclOps {
 public:
  virtual ~NcclOps() = default;

  // ncclGetUniqueId: kNcclUniqueIdBytes bytes.
  virtual absl::StatusOr<std::string> GetUniqueId() = 0;
  // ncclCommInitRankConfig with blocking = 0 on `device`: returns at once;
  // poll CommState until kReady (both ranks joined).
  virtual absl::StatusOr<NcclCommHandle> CommInitRank(const std::string& unique_id, int nranks, int rank,
                                                      int device) = 0;
  // ncclCommGetAsyncError; on kFailed, `error` says why (UNAVAILABLE).
  virtual NcclCommState CommState(NcclCommHandle comm, absl::Status* error) = 0;
  // ncclCommAbort: ends every operation in flight on the communicator and
  // frees it; ncclCommDestroy: frees an idle one.
  virtual void CommAbort(NcclCommHandle comm) = 0;
  virtual void CommDestroy(NcclCommHandle comm) = 0;

  virtual absl::Status GroupStart() = 0;
  virtual absl::Status GroupEnd() = 0;
  virtual absl::Status Send(const void* buf, size_t bytes, int peer, NcclCommHandle comm, GpuStreamHandle s) = 0;
  virtual absl::Status Recv(void* buf, size_t bytes, int peer, NcclCommHandle comm, GpuStreamHandle s) = 0;

  virtual absl::StatusOr<GpuStreamHandle> CreateStream(int device) = 0;
  // Waits for the stream's work before destroying it.
  virtual void DestroyStream(int device, GpuStreamHandle s) = 0;
  virtual absl::StatusOr<GpuEventHandle> CreateEvent(int device) = 0;
  virtual void DestroyEvent(GpuEventHandle e) = 0;
  virtual absl::Status RecordEvent(GpuEventHandle e, GpuStreamHandle s) = 0;
  // True once everything recorded before it completed.
  virtual absl::StatusOr<bool> EventDone(GpuEventHandle e) = 0;
  // Stream-ordered device-to-device copy, and device buffers (staging).
  virtual absl::Status CopyAsync(void* dst, const void* src, size_t bytes, GpuStreamHandle s) = 0;
  virtual absl::StatusOr<void*> Alloc(int device, size_t bytes) = 0;
  virtual void Free(int device, void* p) = 0;
  // Makes `device` current for the calling thread (cudaSetDevice): a
  // transport thread's copies and event records go to that GPU's streams.
  virtual absl::Status BindThread(int device) = 0;
  // The GPU that owns `p`, and its PCI bus id.
  virtual absl::StatusOr<int> DeviceOf(const void* p) = 0;
  virtual absl::StatusOr<std::string> PciBusId(int device) = 0;
};

// libnccl + CUDA runtime. UNIMPLEMENTED in builds without NCCL. Sets
// NCCL_NVLS_ENABLE=0 (overwriting) before it returns, so before any
// communicator exists: NVLink multicast is off on the machines we run on.
absl::StatusOr<std::unique_ptr<NcclOps>> MakeCudaNcclOps();

}  // namespace tandem
