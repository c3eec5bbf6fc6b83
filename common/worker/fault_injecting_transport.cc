#include "common/worker/fault_injecting_transport.h"

#include "absl/strings/str_cat.h"

namespace tandem {
namespace {

class FaultyTransfer final : public KvTransfer {
 public:
  FaultyTransfer(std::unique_ptr<KvTransfer> inner, absl::Status injected)
      : inner_(std::move(inner)), injected_(std::move(injected)) {}

  absl::Status SendLayer(int layer) override { return inner_->SendLayer(layer); }
  absl::Status Finish() override {
    // The real copies complete (or fail) first: only then may the failure
    // be reported and the destination blocks be freed.
    absl::Status real = inner_->Finish();
    return real.ok() ? injected_ : real;
  }
  int64_t bytes_sent() const override { return inner_->bytes_sent(); }
  const std::string& id() const override { return inner_->id(); }
  std::string_view transport() const override { return inner_->transport(); }
  std::string completion() const override { return inner_->completion(); }

 private:
  std::unique_ptr<KvTransfer> inner_;
  absl::Status injected_;
};

class FaultInjectingTransport final : public KvTransport {
 public:
  FaultInjectingTransport(std::unique_ptr<KvTransport> inner, FaultInjector& faults)
      : inner_(std::move(inner)), faults_(faults) {}

  std::string_view name() const override { return inner_->name(); }
  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override {
    return inner_->ExportPool(pool, self);
  }
  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override {
    const std::string id = spec.transfer_id;
    absl::StatusOr<std::unique_ptr<KvTransfer>> t = inner_->StartTransfer(pool, self, dest, std::move(spec));
    if (!t.ok()) return t;
    absl::Status injected = faults_.MaybeFail(absl::StrCat("KV transfer ", id));
    if (injected.ok()) return t;
    return std::unique_ptr<KvTransfer>(new FaultyTransfer(std::move(*t), std::move(injected)));
  }
  void Disconnect(std::string_view worker_id) override { inner_->Disconnect(worker_id); }
  // Faults are injected on the sending side only: the receiver is the
  // inner transport's own.
  KvReceiver* receiver() override { return inner_->receiver(); }

 private:
  std::unique_ptr<KvTransport> inner_;
  FaultInjector& faults_;
};

}  // namespace

std::unique_ptr<KvTransport> MakeFaultInjectingTransport(std::unique_ptr<KvTransport> inner, FaultInjector& faults) {
  if (faults.rate() <= 0.0) return inner;
  return std::make_unique<FaultInjectingTransport>(std::move(inner), faults);
}

}  // namespace tandem
