// NcclOps over libnccl and the CUDA runtime (NCCL builds only). Every call
// is checked: NCCL errors become absl::Status with ncclGetErrorString (and
// ncclGetLastError's detail), CUDA errors through cuda_check.h.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/transport/cuda_handles.h"
#include "common/transport/nccl_ops.h"
#include "common/transport/nccl_protocol.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

static_assert(sizeof(ncclUniqueId) == kNcclUniqueIdBytes, "nccl_protocol.h's unique id size");

absl::Status NcclStatus(ncclResult_t r, std::string_view what, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess || r == ncclInProgress) return absl::OkStatus();
  const char* detail = ncclGetLastError(comm);
  return absl::UnavailableError(absl::StrCat(std::string(what), ": ", ncclGetErrorString(r),
                                             detail != nullptr && *detail ? absl::StrCat(" (", detail, ")") : ""));
}

#define TANDEM_NCCL_RETURN_IF_ERROR(call) TANDEM_RETURN_IF_ERROR(NcclStatus((call), #call))

class CudaNcclOps final : public NcclOps {
 public:
  absl::StatusOr<std::string> GetUniqueId() override {
    ncclUniqueId id;
    TANDEM_NCCL_RETURN_IF_ERROR(ncclGetUniqueId(&id));
    return std::string(id.internal, sizeof(id.internal));
  }

  absl::StatusOr<NcclCommHandle> CommInitRank(const std::string& unique_id, int nranks, int rank, int device) override {
    if (unique_id.size() != sizeof(ncclUniqueId)) return absl::InvalidArgumentError("bad NCCL unique id size");
    ncclUniqueId id;
    std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    // Non-blocking: the call returns at once and CommState polls, so both
    // sides can bound the wait for the other.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t comm = nullptr;
    TANDEM_NCCL_RETURN_IF_ERROR(ncclCommInitRankConfig(&comm, nranks, id, rank, &config));
    return static_cast<NcclCommHandle>(comm);
  }

  NcclCommState CommState(NcclCommHandle comm, absl::Status* error) override {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(static_cast<ncclComm_t>(comm), &async);
    if (r != ncclSuccess) {
      *error = NcclStatus(r, "ncclCommGetAsyncError");
      return NcclCommState::kFailed;
    }
    if (async == ncclSuccess) return NcclCommState::kReady;
    if (async == ncclInProgress) return NcclCommState::kInProgress;
    *error = NcclStatus(async, "NCCL communicator", static_cast<ncclComm_t>(comm));
    return NcclCommState::kFailed;
  }

  void CommAbort(NcclCommHandle comm) override {
    const ncclResult_t r = ncclCommAbort(static_cast<ncclComm_t>(comm));
    if (r != ncclSuccess) {
      TANDEM_LOG(WARNING) << NcclStatus(r, "ncclCommAbort");
    }
  }
  void CommDestroy(NcclCommHandle comm) override {
    // Non-blocking communicator: ncclCommFinalize flushes what is queued
    // and completes asynchronously; wait for it (bounded: a peer that is
    // gone must not hang the caller), then free. Abort if it fails.
    ncclComm_t c = static_cast<ncclComm_t>(comm);
    ncclResult_t r = ncclCommFinalize(c);
    const absl::Time until = absl::Now() + absl::Seconds(10);
    ncclResult_t state = r;
    while (r == ncclSuccess || r == ncclInProgress) {
      r = ncclCommGetAsyncError(c, &state);
      if (r != ncclSuccess || state != ncclInProgress || absl::Now() > until) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (r == ncclSuccess && state == ncclSuccess) {
      r = ncclCommDestroy(c);
      if (r == ncclSuccess) return;
    }
    TANDEM_LOG(WARNING) << (state == ncclInProgress ? absl::DeadlineExceededError("ncclCommFinalize did not complete")
                                                    : NcclStatus(r != ncclSuccess ? r : state, "ncclCommFinalize/Destroy"))
                        << "; aborting the communicator instead";
    r = ncclCommAbort(c);
    if (r != ncclSuccess) {
      TANDEM_LOG(WARNING) << NcclStatus(r, "ncclCommAbort");
    }
  }

  // On a non-blocking communicator a call may return ncclInProgress while
  // NCCL still enqueues it (the first p2p op sets up the connection); no
  // further call may be made on the communicator until that is done, so
  // wait here (bounded) for the state to leave ncclInProgress.
  absl::Status GroupStart() override {
    group_depth_++;
    group_comm_ = nullptr;
    return NcclStatus(ncclGroupStart(), "ncclGroupStart");
  }
  absl::Status GroupEnd() override {
    group_depth_--;
    const ncclResult_t r = ncclGroupEnd();
    TANDEM_RETURN_IF_ERROR(NcclStatus(r, "ncclGroupEnd", group_comm_));
    return r == ncclInProgress && group_comm_ != nullptr ? WaitEnqueued(group_comm_, "ncclGroupEnd") : absl::OkStatus();
  }
  absl::Status Send(const void* buf, size_t bytes, int peer, NcclCommHandle comm, GpuStreamHandle s) override {
    ncclComm_t c = static_cast<ncclComm_t>(comm);
    return Issued(ncclSend(buf, bytes, ncclUint8, peer, c, static_cast<cudaStream_t>(s)), c, "ncclSend");
  }
  absl::Status Recv(void* buf, size_t bytes, int peer, NcclCommHandle comm, GpuStreamHandle s) override {
    ncclComm_t c = static_cast<ncclComm_t>(comm);
    return Issued(ncclRecv(buf, bytes, ncclUint8, peer, c, static_cast<cudaStream_t>(s)), c, "ncclRecv");
  }

  absl::StatusOr<GpuStreamHandle> CreateStream(int device) override {
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    cudaStream_t s = nullptr;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return static_cast<GpuStreamHandle>(s);
  }
  void DestroyStream(int device, GpuStreamHandle s) override {
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(device);
    cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(s));
    if (e != cudaSuccess) {
      TANDEM_LOG(WARNING) << "cudaStreamSynchronize: " << cudaGetErrorString(e);
    }
    e = cudaStreamDestroy(static_cast<cudaStream_t>(s));
    if (e != cudaSuccess) {
      TANDEM_LOG(WARNING) << "cudaStreamDestroy: " << cudaGetErrorString(e);
    }
  }
  absl::StatusOr<GpuEventHandle> CreateEvent(int device) override {
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    cudaEvent_t e = nullptr;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return static_cast<GpuEventHandle>(e);
  }
  void DestroyEvent(GpuEventHandle e) override {
    const cudaError_t err = cudaEventDestroy(static_cast<cudaEvent_t>(e));
    if (err != cudaSuccess) {
      TANDEM_LOG(WARNING) << "cudaEventDestroy: " << cudaGetErrorString(err);
    }
  }
  absl::Status RecordEvent(GpuEventHandle e, GpuStreamHandle s) override {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(static_cast<cudaEvent_t>(e), static_cast<cudaStream_t>(s)));
    return absl::OkStatus();
  }
  absl::StatusOr<bool> EventDone(GpuEventHandle e) override {
    const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(e));
    if (err == cudaErrorNotReady) return false;
    TANDEM_CUDA_RETURN_IF_ERROR(err);
    return true;
  }
  absl::Status CopyAsync(void* dst, const void* src, size_t bytes, GpuStreamHandle s) override {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(s)));
    return absl::OkStatus();
  }
  absl::StatusOr<void*> Alloc(int device, size_t bytes) override {
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    void* p = nullptr;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, bytes));
    return p;
  }
  void Free(int device, void* p) override {
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(device);
    const cudaError_t err = cudaFree(p);
    if (err != cudaSuccess) {
      TANDEM_LOG(WARNING) << "cudaFree: " << cudaGetErrorString(err);
    }
  }
  absl::Status BindThread(int device) override {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
    return absl::OkStatus();
  }
  absl::StatusOr<int> DeviceOf(const void* p) override { return DeviceOfPointer(p); }
  absl::StatusOr<std::string> PciBusId(int device) override {
    char bus[64] = {};
    TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceGetPCIBusId(bus, sizeof(bus), device));
    return std::string(bus);
  }

 private:
  absl::Status Issued(ncclResult_t r, ncclComm_t c, std::string_view what) {
    TANDEM_RETURN_IF_ERROR(NcclStatus(r, what, c));
    if (group_depth_ > 0) {
      group_comm_ = c;
      return absl::OkStatus();
    }
    return r == ncclInProgress ? WaitEnqueued(c, what) : absl::OkStatus();
  }

  static absl::Status WaitEnqueued(ncclComm_t c, std::string_view what) {
    const absl::Time until = absl::Now() + absl::Seconds(60);
    for (;;) {
      ncclResult_t state = ncclSuccess;
      TANDEM_RETURN_IF_ERROR(NcclStatus(ncclCommGetAsyncError(c, &state), "ncclCommGetAsyncError", c));
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) return NcclStatus(state, what, c);
      if (absl::Now() > until) return absl::DeadlineExceededError(absl::StrCat(std::string(what), " never completed"));
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  // NCCL groups are per thread, so is what GroupEnd must wait on.
  static thread_local int group_depth_;
  static thread_local ncclComm_t group_comm_;
};

thread_local int CudaNcclOps::group_depth_ = 0;
thread_local ncclComm_t CudaNcclOps::group_comm_ = nullptr;

}  // namespace

absl::StatusOr<std::unique_ptr<NcclOps>> MakeCudaNcclOps() {
  // NVLink multicast (NVLS) stays off: overwrite, since a launcher or image
  // may set it to 1, and do it before the first communicator reads it.
  if (setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/1) != 0) {
    return absl::InternalError("setenv(NCCL_NVLS_ENABLE=0) failed");
  }
  int version = 0;
  TANDEM_NCCL_RETURN_IF_ERROR(ncclGetVersion(&version));
  TANDEM_LOG(INFO) << "NCCL " << version << " (NCCL_NVLS_ENABLE=0)";
  return std::unique_ptr<NcclOps>(new CudaNcclOps());
}

}  // namespace tandem
