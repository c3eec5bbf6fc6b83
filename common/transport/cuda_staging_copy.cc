// The CUDA half of staging_copy.h: pinned staging buffers and a copy queue
// on a non-blocking stream, its marks CUDA events.
#include <cuda_runtime.h>

#include <deque>
#include <vector>

#include "common/transport/cuda_handles.h"
#include "common/transport/staging_copy.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

class PinnedStagingBuffer final : public StagingBuffer {
 public:
  static absl::StatusOr<std::unique_ptr<StagingBuffer>> Allocate(size_t bytes) {
    std::unique_ptr<PinnedStagingBuffer> b(new PinnedStagingBuffer());
    // Portable: the decode side's progress thread and the prefill loop may
    // have other devices current than the one that allocated it.
    TANDEM_CUDA_RETURN_IF_ERROR(cudaHostAlloc(reinterpret_cast<void**>(&b->data_), bytes, cudaHostAllocPortable));
    b->size_ = bytes;
    return std::unique_ptr<StagingBuffer>(std::move(b));
  }
  ~PinnedStagingBuffer() override {
    if (data_ != nullptr) cudaFreeHost(data_);
  }
  char* data() override { return data_; }
  size_t size() const override { return size_; }

 private:
  PinnedStagingBuffer() = default;
  char* data_ = nullptr;
  size_t size_ = 0;
};

class CudaCopyQueue final : public CopyQueue {
 public:
  static absl::StatusOr<std::unique_ptr<CopyQueue>> Create(int device) {
    std::unique_ptr<CudaCopyQueue> q(new CudaCopyQueue());
    q->device_ = device;
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    TANDEM_ASSIGN_OR_RETURN(q->stream_, CudaStream::Create());
    return std::unique_ptr<CopyQueue>(std::move(q));
  }
  ~CudaCopyQueue() override {
    // Copies in flight read or write memory their owners free next.
    absl::Status s = Drain();
    if (!s.ok()) {
      TANDEM_LOG(WARNING) << "staging copies: " << s;
    }
  }

  absl::Status Copy(void* dst, const void* src, size_t bytes) override {
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device_));
    TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream_.get()));
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> Mark() override {
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device_));
    CudaEvent e;
    if (!spare_.empty()) {
      e = std::move(spare_.back());
      spare_.pop_back();
    } else {
      TANDEM_ASSIGN_OR_RETURN(e, CudaEvent::Create());
    }
    TANDEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(e.get(), stream_.get()));
    pending_.push_back({++marks_, std::move(e)});
    return marks_;
  }

  absl::StatusOr<bool> Reached(uint64_t mark) override {
    // Events complete in stream order: retire them from the front.
    while (!pending_.empty() && pending_.front().mark <= mark) {
      const cudaError_t err = cudaEventQuery(pending_.front().event.get());
      if (err == cudaErrorNotReady) return false;
      TANDEM_CUDA_RETURN_IF_ERROR(err);
      reached_ = pending_.front().mark;
      spare_.push_back(std::move(pending_.front().event));
      pending_.pop_front();
    }
    return mark <= reached_ || pending_.empty() || pending_.front().mark > mark;
  }

  absl::Status Drain() override {
    if (stream_.get() == nullptr) return absl::OkStatus();
    TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    while (!pending_.empty()) {
      reached_ = pending_.front().mark;
      spare_.push_back(std::move(pending_.front().event));
      pending_.pop_front();
    }
    return absl::OkStatus();
  }

 private:
  struct Pending {
    uint64_t mark;
    CudaEvent event;
  };
  CudaCopyQueue() = default;
  int device_ = 0;
  uint64_t marks_ = 0;
  uint64_t reached_ = 0;
  std::deque<Pending> pending_;
  std::vector<CudaEvent> spare_;
  CudaStream stream_;  // last: destroyed first, once drained
};

}  // namespace

absl::StatusOr<std::unique_ptr<StagingBuffer>> AllocatePinnedStaging(KvPoolView& pool, size_t bytes) {
  TANDEM_ASSIGN_OR_RETURN(int device, DeviceOfPointer(pool.KeyBlock(0, 0)));
  TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
  return PinnedStagingBuffer::Allocate(bytes);
}

absl::StatusOr<std::unique_ptr<CopyQueue>> MakeCudaCopyQueue(KvPoolView& pool) {
  TANDEM_ASSIGN_OR_RETURN(int device, DeviceOfPointer(pool.KeyBlock(0, 0)));
  return CudaCopyQueue::Create(device);
}

}  // namespace tandem
