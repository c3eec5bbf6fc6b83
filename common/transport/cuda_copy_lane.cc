#include "common/transport/cuda_copy_lane.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

#include "common/transport/cuda_block_copy.h"
#include "common/transport/cuda_ipc_descriptor.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<CudaCopyLane>> CudaCopyLane::Create(int device) {
  std::unique_ptr<CudaCopyLane> lane(new CudaCopyLane());
  lane->device_ = device;
  TANDEM_ASSIGN_OR_RETURN(lane->stream_, CudaStream::Create());
  TANDEM_ASSIGN_OR_RETURN(lane->done_, CudaEvent::Create(cudaEventInterprocess));
  cudaIpcEventHandle_t handle;
  TANDEM_CUDA_RETURN_IF_ERROR(cudaIpcGetEventHandle(&handle, lane->done_.get()));
  lane->completion_record_ = EncodeCudaIpcCompletion(
      {std::string(reinterpret_cast<const char*>(&handle), sizeof(handle)), static_cast<uint64_t>(getpid())});
  TANDEM_CUDA_RETURN_IF_ERROR(KvCopyMaxCtas(&lane->max_ctas_));
  return lane;
}

CudaCopyLane::~CudaCopyLane() {
  // The buffers and the stream belong to device_'s context.
  absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(device_);
  device_table_.Reset();
  host_table_.Reset();
  done_ = CudaEvent();
  stream_ = CudaStream();
}

absl::StatusOr<const int32_t*> CudaCopyLane::UploadTable(std::span<const int32_t> src, std::span<const int32_t> dst) {
  const size_t pairs = std::min(src.size(), dst.size());
  const size_t bytes = 2 * pairs * sizeof(int32_t);
  const size_t reserve = 2 * std::max(pairs, kMinTablePairs) * sizeof(int32_t);
  // Reserve() keeps the buffers when they are big enough; the previous
  // holder's upload is over (it synchronized the stream before returning
  // the lane), so overwriting the staging buffer is safe.
  TANDEM_RETURN_IF_ERROR(host_table_.Reserve(reserve));
  TANDEM_RETURN_IF_ERROR(device_table_.Reserve(reserve));
  int32_t* host = host_table_.as<int32_t>();
  for (size_t i = 0; i < pairs; ++i) {
    host[2 * i] = src[i];
    host[2 * i + 1] = dst[i];
  }
  if (bytes > 0) {
    TANDEM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device_table_.get(), host, bytes, cudaMemcpyHostToDevice, stream_.get()));
  }
  return device_table_.as<const int32_t>();
}

CudaCopyLaneLease& CudaCopyLaneLease::operator=(CudaCopyLaneLease&& o) noexcept {
  if (this != &o) {
    Return();
    pool_ = std::move(o.pool_);
    lane_ = std::move(o.lane_);
  }
  return *this;
}

CudaCopyLaneLease::~CudaCopyLaneLease() { Return(); }

void CudaCopyLaneLease::Return() {
  if (lane_ != nullptr && pool_ != nullptr) pool_->Return(std::move(lane_));
  lane_.reset();
  pool_.reset();
}

CudaCopyLanePool::~CudaCopyLanePool() = default;  // the idle lanes, each on its own device

absl::StatusOr<CudaCopyLaneLease> CudaCopyLanePool::Acquire(int device) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = idle_.begin(); it != idle_.end(); ++it) {
      if ((*it)->device() != device) continue;
      std::unique_ptr<CudaCopyLane> lane = std::move(*it);
      idle_.erase(it);
      return CudaCopyLaneLease(shared_from_this(), std::move(lane));
    }
  }
  // None idle: a new one, made outside the lock (stream and event creation
  // take microseconds; other transfers need not wait for them).
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CudaCopyLane> lane, CudaCopyLane::Create(device));
  return CudaCopyLaneLease(shared_from_this(), std::move(lane));
}

void CudaCopyLanePool::Return(std::unique_ptr<CudaCopyLane> lane) {
  std::unique_ptr<CudaCopyLane> extra;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  if (idle_.size() >= kMaxIdle) {
    extra = std::move(lane);
    return;
  }
  idle_.push_back(std::move(lane));
}

}  // namespace tandem
