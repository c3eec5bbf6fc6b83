#include "common/transport/transport_selection.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/transport/nccl_protocol.h"
#include "common/transport/wire_codec.h"

namespace tandem {
namespace {

constexpr uint32_t kOffersMagic = 0x31464f54;  // "TOF1"

}  // namespace

std::vector<std::string> TransportsToExport(bool pool_on_device) {
  if (pool_on_device) {
    return {std::string(kTransportCudaIpc), std::string(kTransportNccl), std::string(kTransportUcxStaged)};
  }
  return {std::string(kTransportUcx)};
}

std::string EncodeTransportOffers(const std::vector<TransportOffer>& offers) {
  wire::Writer w;
  w.U32(kOffersMagic);
  w.U32(static_cast<uint32_t>(offers.size()));
  for (const TransportOffer& o : offers) {
    w.Bytes(o.transport);
    w.Bytes(o.endpoint);
    w.Bytes(o.remote_key);
  }
  return std::move(w.str());
}

absl::StatusOr<std::vector<TransportOffer>> DecodeTransportOffers(std::string_view bytes, std::string_view owner) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("transport offers of decode worker ", std::string(owner),
                                                   " are malformed: ", std::string(why)));
  };
  wire::Reader r(bytes);
  uint32_t magic = 0, count = 0;
  if (!r.U32(&magic) || magic != kOffersMagic) return bad("no offer list");
  if (!r.U32(&count) || count == 0 || count > 16) return bad("no offers");
  std::vector<TransportOffer> offers(count);
  for (uint32_t i = 0; i < count; ++i) {
    if (!r.Bytes(&offers[i].transport) || !r.Bytes(&offers[i].endpoint) || !r.Bytes(&offers[i].remote_key)) {
      return bad(absl::StrCat("offer ", i, " of ", count, " is truncated"));
    }
    if (offers[i].transport.empty() || offers[i].transport == kTransportAuto) {
      return bad(absl::StrCat("offer ", i, " names no concrete transport"));
    }
  }
  if (!r.done()) return bad(absl::StrCat(r.remaining(), " trailing bytes"));
  return offers;
}

absl::StatusOr<std::vector<TransportOffer>> OffersOf(const v1::KvPoolDescriptor& d) {
  if (d.transport() == kTransportAuto) return DecodeTransportOffers(d.remote_key(), d.worker_id());
  return std::vector<TransportOffer>{{d.transport(), d.endpoint(), d.remote_key()}};
}

v1::KvPoolDescriptor WithOffer(const v1::KvPoolDescriptor& d, const TransportOffer& offer) {
  v1::KvPoolDescriptor out = d;
  out.set_transport(offer.transport);
  out.set_endpoint(offer.endpoint);
  out.set_remote_key(offer.remote_key);
  return out;
}

absl::StatusOr<TransportOffer> ChooseTransport(const std::vector<TransportOffer>& offers,
                                               const TransportChoiceInput& in, std::string_view peer) {
  std::vector<std::string> passed_over;
  for (const std::string& name : in.available) {
    auto it = std::find_if(offers.begin(), offers.end(), [&](const TransportOffer& o) { return o.transport == name; });
    if (it == offers.end()) continue;
    if (name == kTransportCudaIpc) {
      if (it->endpoint != in.local_host_id) {
        passed_over.push_back("cuda_ipc (the peer is on another host)");
        continue;
      }
      if (!in.local_on_device) {
        passed_over.push_back("cuda_ipc (our KV pool is in host memory)");
        continue;
      }
    } else if (name == kTransportNccl && !in.local_on_device) {
      passed_over.push_back("nccl (our KV pool is in host memory)");
      continue;
    } else if (name == kTransportUcx && in.local_on_device) {
      passed_over.push_back("ucx (one-sided puts from host memory only; our KV pool is on a GPU)");
      continue;
    }
    return *it;
  }
  std::vector<std::string> offered;
  for (const TransportOffer& o : offers) offered.push_back(o.transport);
  return absl::FailedPreconditionError(absl::StrCat(
      "no KV transport reaches decode worker ", std::string(peer), ": it offers ", absl::StrJoin(offered, ", "),
      "; this worker runs ", in.available.empty() ? "none" : absl::StrJoin(in.available, ", "),
      passed_over.empty() ? "" : absl::StrCat("; passed over: ", absl::StrJoin(passed_over, "; "))));
}

}  // namespace tandem
