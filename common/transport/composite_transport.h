// A KvTransport made of several (--transport=auto, and the named UCX and
// CUDA IPC transports, which are composites of their own parts). It
// exports a pool with every part suited to the pool (TransportsToExport)
// and, per transfer, hands the request to the part ChooseTransport picks
// for the destination's offers. See transport_selection.h for the policy.
//
// Threads: as thread-safe as its parts (all are); the record of which
// transport each peer was last reached with is under a mutex and only
// decides what is logged.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/transport/kv_transport.h"

namespace tandem {

class CompositeTransport final : public KvTransport, private KvReceiver {
 public:
  // `parts`, preferred first, non-empty.
  CompositeTransport(std::string name, std::vector<std::unique_ptr<KvTransport>> parts);

  std::string_view name() const override { return name_; }
  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override;
  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override;
  void Disconnect(std::string_view worker_id) override;
  // Itself, when some part has a receiver: it fans the calls out to the
  // parts' receivers (below); nullptr when none has.
  KvReceiver* receiver() override;

  // The names of the parts, preferred first.
  std::vector<std::string> part_names() const;

 private:
  // KvReceiver: the gate goes to every part's receiver; an announced
  // transfer to the nccl part's (FAILED_PRECONDITION without one);
  // WaitReceived asks every part's receiver, each of which acts only on
  // what is its own (NCCL on the receives it posted for the id, CUDA IPC
  // on a completion record of its kind).
  void SetWriteGate(KvWriteGate* gate) override;
  absl::Status AcceptAnnouncedTransfer(const v1::NcclTransferRequest& req, const std::vector<int32_t>& writable,
                                       ReceiveFailed on_failed) override;
  absl::Status WaitReceived(std::string_view transfer_id, std::string_view completion, absl::Time deadline) override;

  KvTransport* Part(std::string_view name) const;

  const std::string name_;
  const std::vector<std::unique_ptr<KvTransport>> parts_;
  std::mutex mu_;
  std::unordered_map<std::string, std::string> chosen_;  // peer worker id -> transport last used
};

}  // namespace tandem
