#include "common/transport/staging_copy.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

class HostStagingBuffer final : public StagingBuffer {
 public:
  explicit HostStagingBuffer(size_t bytes)
      : data_(static_cast<char*>(::operator new(bytes, std::align_val_t{64}))), size_(bytes) {}
  ~HostStagingBuffer() override { ::operator delete(data_, std::align_val_t{64}); }
  HostStagingBuffer(const HostStagingBuffer&) = delete;
  HostStagingBuffer& operator=(const HostStagingBuffer&) = delete;
  char* data() override { return data_; }
  size_t size() const override { return size_; }

 private:
  char* data_;
  size_t size_;
};

// Host pools: the copy is done when enqueued, so every mark is reached.
class HostCopyQueue final : public CopyQueue {
 public:
  absl::Status Copy(void* dst, const void* src, size_t bytes) override {
    std::memcpy(dst, src, bytes);
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> Mark() override { return ++marks_; }
  absl::StatusOr<bool> Reached(uint64_t mark) override { return mark <= marks_; }
  absl::Status Drain() override { return absl::OkStatus(); }

 private:
  uint64_t marks_ = 0;
};

#ifndef TANDEM_TRANSPORT_CUDA
absl::Status NoCuda() {
  return absl::UnimplementedError("the KV pool is on a GPU but this build has no CUDA support in the transports");
}
#endif

}  // namespace

absl::StatusOr<std::unique_ptr<StagingBuffer>> AllocateStaging(KvPoolView& pool, size_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("empty staging buffer");
#ifdef TANDEM_TRANSPORT_CUDA
  if (pool.on_device()) return AllocatePinnedStaging(pool, bytes);
#else
  if (pool.on_device()) return NoCuda();
#endif
  return std::unique_ptr<StagingBuffer>(new HostStagingBuffer(bytes));
}

absl::StatusOr<std::unique_ptr<CopyQueue>> MakeCopyQueue(KvPoolView& pool) {
#ifdef TANDEM_TRANSPORT_CUDA
  if (pool.on_device()) return MakeCudaCopyQueue(pool);
#else
  if (pool.on_device()) return NoCuda();
#endif
  return std::unique_ptr<CopyQueue>(new HostCopyQueue());
}

}  // namespace tandem
