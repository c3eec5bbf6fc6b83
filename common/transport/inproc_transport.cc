#include "common/transport/inproc_transport.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/transport/transfer_checks.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Process-wide map from endpoint name to exported pool. An entry lives as
// long as the transport that exported it. Copies run under the lock, so a
// transport cannot be destroyed (and its pool freed) mid-copy.
struct Registry {
  std::mutex mu;
  std::unordered_map<std::string, KvPoolView*> pools;
};

Registry& GlobalRegistry() {
  static Registry* r = new Registry();
  return *r;
}

class InProcessTransfer final : public KvTransfer {
 public:
  InProcessTransfer(KvPoolView& src, std::string endpoint, KvTransferSpec spec)
      : src_(src), endpoint_(std::move(endpoint)), spec_(std::move(spec)) {}

  absl::Status SendLayer(int layer) override {
    Registry& r = GlobalRegistry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.pools.find(endpoint_);
    if (it == r.pools.end()) {
      return absl::UnavailableError(absl::StrCat("KV transfer ", spec_.transfer_id, ": pool ", endpoint_, " is gone"));
    }
    TANDEM_RETURN_IF_ERROR(CheckLayer(absl::StrCat("KV transfer ", spec_.transfer_id), layer,
                                      src_.layout().num_layers));
    // Past the deadline the destination may be another request's by now.
    TANDEM_RETURN_IF_ERROR(CheckTransferDeadline(spec_));
    const size_t bytes = static_cast<size_t>(src_.layout().block_bytes());
    for (size_t i = 0; i < spec_.src_blocks.size(); ++i) {
      std::memcpy(it->second->KeyBlock(layer, spec_.dst_blocks[i]), src_.KeyBlock(layer, spec_.src_blocks[i]), bytes);
      std::memcpy(it->second->ValueBlock(layer, spec_.dst_blocks[i]), src_.ValueBlock(layer, spec_.src_blocks[i]),
                  bytes);
      bytes_ += 2 * static_cast<int64_t>(bytes);
    }
    return absl::OkStatus();
  }
  // The copies were done in SendLayer: nothing to wait for, so the finish
  // timeout cannot run out.
  absl::Status Finish() override { return CheckTransferDeadline(spec_); }
  int64_t bytes_sent() const override { return bytes_; }
  const std::string& id() const override { return spec_.transfer_id; }
  std::string_view transport() const override { return "inproc"; }

 private:
  KvPoolView& src_;
  std::string endpoint_;
  KvTransferSpec spec_;
  int64_t bytes_ = 0;
};

class InProcessTransport final : public KvTransport {
 public:
  ~InProcessTransport() override {
    Registry& r = GlobalRegistry();
    std::lock_guard<std::mutex> lock(r.mu);
    for (const std::string& e : exported_) r.pools.erase(e);
  }
  std::string_view name() const override { return "inproc"; }

  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override {
    static std::atomic<int64_t> counter{0};
    if (pool.on_device()) {
      return absl::UnimplementedError("the in-process KV transport copies host memory only; the pool is on a GPU");
    }
    const std::string endpoint = absl::StrCat("inproc-", getpid(), "-", counter++);
    {
      Registry& r = GlobalRegistry();
      std::lock_guard<std::mutex> lock(r.mu);
      r.pools[endpoint] = &pool;
      exported_.push_back(endpoint);
    }
    v1::KvPoolDescriptor d = DescribePool(pool, self, "inproc");
    d.set_endpoint(endpoint);
    return d;
  }

  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override {
    TANDEM_RETURN_IF_ERROR(CheckDescriptorTransport(dest, "inproc"));
    if (pool.on_device()) {
      return absl::UnimplementedError("the in-process KV transport copies host memory only; the pool is on a GPU");
    }
    TANDEM_RETURN_IF_ERROR(CheckTransfer(self, pool, dest, spec));
    {
      Registry& r = GlobalRegistry();
      std::lock_guard<std::mutex> lock(r.mu);
      if (r.pools.find(dest.endpoint()) == r.pools.end()) {
        return absl::UnavailableError(absl::StrCat("KV pool of decode worker ", dest.worker_id(), " (",
                                                   dest.endpoint(), ") is not exported in this process any more"));
      }
    }
    return std::unique_ptr<KvTransfer>(new InProcessTransfer(pool, dest.endpoint(), std::move(spec)));
  }

  void Disconnect(std::string_view) override {}

 private:
  std::vector<std::string> exported_;  // guarded by the registry's mutex
};

}  // namespace

std::unique_ptr<KvTransport> MakeInProcessTransport() { return std::make_unique<InProcessTransport>(); }

}  // namespace tandem
