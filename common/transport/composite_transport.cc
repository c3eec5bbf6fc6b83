#include "common/transport/composite_transport.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/transport/host_id.h"
#include "common/transport/nccl_protocol.h"
#include "common/transport/transport_selection.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

CompositeTransport::CompositeTransport(std::string name, std::vector<std::unique_ptr<KvTransport>> parts)
    : name_(std::move(name)), parts_(std::move(parts)) {}

std::vector<std::string> CompositeTransport::part_names() const {
  std::vector<std::string> names;
  for (const auto& p : parts_) names.emplace_back(p->name());
  return names;
}

KvTransport* CompositeTransport::Part(std::string_view name) const {
  for (const auto& p : parts_) {
    if (p->name() == name) return p.get();
  }
  return nullptr;
}

absl::StatusOr<v1::KvPoolDescriptor> CompositeTransport::ExportPool(KvPoolView& pool, const KvEndpointInfo& self) {
  // The transports suited to this kind of pool that we run; a composite
  // asked for by name whose parts all fall outside that list (ucx_staged
  // on a host pool) still exports with them: the operator chose it.
  std::vector<KvTransport*> exporters;
  for (const std::string& name : TransportsToExport(pool.on_device())) {
    if (KvTransport* p = Part(name)) exporters.push_back(p);
  }
  if (exporters.empty()) {
    for (const auto& p : parts_) exporters.push_back(p.get());
  }
  std::vector<v1::KvPoolDescriptor> exported;
  std::vector<std::string> refusals;
  absl::Status first_error;
  for (KvTransport* p : exporters) {
    absl::StatusOr<v1::KvPoolDescriptor> d = p->ExportPool(pool, self);
    if (d.ok()) {
      exported.push_back(std::move(*d));
      continue;
    }
    TANDEM_LOG(WARNING) << "KV pool not exported over " << p->name() << ": " << d.status();
    refusals.push_back(absl::StrCat(std::string(p->name()), ": ", d.status().message()));
    if (first_error.ok()) first_error = d.status();
  }
  if (exported.empty()) {
    return absl::Status(first_error.code(), absl::StrCat("no KV transport of '", name_, "' can export the pool (",
                                                         absl::StrJoin(refusals, "; "), ")"));
  }
  std::vector<TransportOffer> offers;
  for (const v1::KvPoolDescriptor& d : exported) offers.push_back({d.transport(), d.endpoint(), d.remote_key()});
  std::vector<std::string> names;
  for (const TransportOffer& o : offers) names.push_back(o.transport);
  TANDEM_LOG(INFO) << "KV pool (" << (pool.on_device() ? "GPU" : "host") << " memory) exported over "
                   << absl::StrJoin(names, ", ");
  if (exported.size() == 1) return exported[0];
  v1::KvPoolDescriptor d = exported[0];
  d.set_transport(std::string(kTransportAuto));
  d.set_endpoint("");
  d.set_remote_key(EncodeTransportOffers(offers));
  return d;
}

absl::StatusOr<std::unique_ptr<KvTransfer>> CompositeTransport::StartTransfer(KvPoolView& pool,
                                                                              const KvEndpointInfo& self,
                                                                              const v1::KvPoolDescriptor& dest,
                                                                              KvTransferSpec spec) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<TransportOffer> offers, OffersOf(dest));
  TransportChoiceInput in;
  in.local_on_device = pool.on_device();
  in.local_host_id = LocalHostId();
  in.available = part_names();
  absl::StatusOr<TransportOffer> choice = ChooseTransport(offers, in, dest.worker_id());
  if (!choice.ok()) {
    // A descriptor of a transport we do not run at all reads better as
    // what the single transports say ("exported over inproc, not ucx").
    if (offers.size() == 1 && Part(offers[0].transport) == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("decode worker ", dest.worker_id(),
                                                        " exported its KV pool over '", offers[0].transport,
                                                        "', which this worker's '", name_, "' transport lacks"));
    }
    return choice.status();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::string& last = chosen_[dest.worker_id()];
    if (last != choice->transport) {
      TANDEM_LOG(INFO) << "KV to decode worker " << dest.worker_id() << " goes over " << choice->transport;
      last = choice->transport;
    }
  }
  return Part(choice->transport)->StartTransfer(pool, self, WithOffer(dest, *choice), std::move(spec));
}

void CompositeTransport::Disconnect(std::string_view worker_id) {
  for (const auto& p : parts_) p->Disconnect(worker_id);
  std::lock_guard<std::mutex> lock(mu_);
  chosen_.erase(std::string(worker_id));
}

KvReceiver* CompositeTransport::receiver() {
  for (const auto& p : parts_) {
    if (p->receiver() != nullptr) return this;
  }
  return nullptr;
}

void CompositeTransport::SetWriteGate(KvWriteGate* gate) {
  for (const auto& p : parts_) {
    if (KvReceiver* r = p->receiver()) r->SetWriteGate(gate);
  }
}

absl::Status CompositeTransport::AcceptAnnouncedTransfer(const v1::NcclTransferRequest& req,
                                                         const std::vector<int32_t>& writable,
                                                         ReceiveFailed on_failed) {
  KvTransport* p = Part(kTransportNccl);
  KvReceiver* r = p == nullptr ? nullptr : p->receiver();
  if (r == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("the '", name_, "' KV transport of this worker has no nccl"));
  }
  return r->AcceptAnnouncedTransfer(req, writable, std::move(on_failed));
}

absl::Status CompositeTransport::WaitReceived(std::string_view transfer_id, std::string_view completion,
                                              absl::Time deadline) {
  for (const auto& p : parts_) {
    if (KvReceiver* r = p->receiver()) TANDEM_RETURN_IF_ERROR(r->WaitReceived(transfer_id, completion, deadline));
  }
  return absl::OkStatus();
}

}  // namespace tandem
