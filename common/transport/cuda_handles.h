// RAII owners of the CUDA objects the GPU transports use (streams, events,
// the current-device switch), with every call checked. CUDA builds only.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/engine/cuda/cuda_check.h"

namespace tandem {

// The CUDA device that owns `p` (device memory only).
inline absl::StatusOr<int> DeviceOfPointer(const void* p) {
  cudaPointerAttributes a = {};
  TANDEM_CUDA_RETURN_IF_ERROR(cudaPointerGetAttributes(&a, p));
  if (a.type != cudaMemoryTypeDevice) {
    return absl::FailedPreconditionError(absl::StrCat("KV pool memory at ", reinterpret_cast<uintptr_t>(p),
                                                      " is not CUDA device memory (type ", static_cast<int>(a.type),
                                                      ")"));
  }
  return a.device;
}

// Makes `device` current for the scope and restores the previous one.
class CudaDeviceScope {
 public:
  static absl::StatusOr<CudaDeviceScope> Enter(int device) {
    int previous = 0;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&previous));
    if (previous != device) TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    return CudaDeviceScope(previous, previous != device);
  }
  CudaDeviceScope(CudaDeviceScope&& o) noexcept : previous_(o.previous_), restore_(std::exchange(o.restore_, false)) {}
  CudaDeviceScope& operator=(CudaDeviceScope&&) = delete;
  ~CudaDeviceScope() {
    if (restore_) cudaSetDevice(previous_);
  }

 private:
  CudaDeviceScope(int previous, bool restore) : previous_(previous), restore_(restore) {}
  int previous_;
  bool restore_;
};

// A non-blocking stream (no implicit ordering with the legacy default
// stream, so transfers never wait for the engine's work or vice versa).
class CudaStream {
 public:
  CudaStream() = default;
  CudaStream(CudaStream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  CudaStream& operator=(CudaStream&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~CudaStream() {
    if (s_ != nullptr) cudaStreamDestroy(s_);
  }
  // On the current device.
  static absl::StatusOr<CudaStream> Create() {
    CudaStream s;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.s_, cudaStreamNonBlocking));
    return s;
  }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent() = default;
  CudaEvent(CudaEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& o) noexcept {
    std::swap(e_, o.e_);
    return *this;
  }
  ~CudaEvent() {
    if (e_ != nullptr) cudaEventDestroy(e_);
  }
  // cudaEventDisableTiming at least (timing events cost more to record).
  static absl::StatusOr<CudaEvent> Create(unsigned flags = cudaEventDisableTiming) {
    CudaEvent e;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e.e_, flags | cudaEventDisableTiming));
    return e;
  }
  // Another process's interprocess event (cudaIpcOpenEventHandle); the
  // current device must be one that can reach it. A failure is cleared
  // from the thread's last error, where the next launch check would find it.
  static absl::StatusOr<CudaEvent> OpenIpc(const cudaIpcEventHandle_t& handle) {
    CudaEvent e;
    const cudaError_t err = cudaIpcOpenEventHandle(&e.e_, handle);
    if (err != cudaSuccess) {
      cudaGetLastError();
      e.e_ = nullptr;
      return CudaStatus(err, "cudaIpcOpenEventHandle");
    }
    return e;
  }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace tandem
