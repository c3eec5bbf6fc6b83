// Which KV transport moves a request's blocks, when a worker runs several
// (--transport=auto). The decode worker exports its pool with every
// transport suited to it and publishes one *offer* per transport; the
// prefill worker, which learns about its peer only from that descriptor,
// picks the first transport of its own preference list that is offered
// and can reach the peer:
//
//   decode pool   offers                  prefill picks
//   GPU           cuda_ipc, nccl,         cuda_ipc when the offer's host id is
//                 ucx_staged              ours and our pool is on a GPU too,
//                                         else nccl when our pool is on a GPU
//                                         and this build has NCCL, else
//                                         ucx_staged
//   host          ucx                     ucx (one-sided puts; host source)
//
// A build without NCCL (or CUDA) neither offers nor picks nccl: it is not
// among its parts, so the next offer is taken.
//
// A descriptor with several offers has transport "auto" and carries the
// list in remote_key (EncodeTransportOffers); a descriptor with one offer
// is that transport's own descriptor, so a single-transport peer reads it
// as before.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

inline constexpr std::string_view kTransportAuto = "auto";
inline constexpr std::string_view kTransportCudaIpc = "cuda_ipc";
inline constexpr std::string_view kTransportUcx = "ucx";
inline constexpr std::string_view kTransportUcxStaged = "ucx_staged";
inline constexpr std::string_view kTransportInProcess = "inproc";

// One way to reach an exported pool: a transport's endpoint and remote key
// (the rest of the descriptor is common to all of them).
struct TransportOffer {
  std::string transport;
  std::string endpoint;
  std::string remote_key;
  bool operator==(const TransportOffer&) const = default;
};

// The transports a decode worker exports a pool with, preferred first.
std::vector<std::string> TransportsToExport(bool pool_on_device);

std::string EncodeTransportOffers(const std::vector<TransportOffer>& offers);
// INVALID_ARGUMENT naming `owner` when truncated, empty or nested.
absl::StatusOr<std::vector<TransportOffer>> DecodeTransportOffers(std::string_view bytes, std::string_view owner);

// The offers a descriptor makes: the list of an "auto" descriptor, or its
// own transport's single offer.
absl::StatusOr<std::vector<TransportOffer>> OffersOf(const v1::KvPoolDescriptor& d);
// `d` as the offer's transport exported it (transport, endpoint, remote key).
v1::KvPoolDescriptor WithOffer(const v1::KvPoolDescriptor& d, const TransportOffer& offer);

struct TransportChoiceInput {
  bool local_on_device = false;
  std::string local_host_id;
  // The transports this side runs, preferred first.
  std::vector<std::string> available;
};

// The offer to use: the first transport of `in.available` that `offers`
// contains and that reaches the peer (cuda_ipc: our pool on a GPU and the
// offer's endpoint, the exporter's host id, equal to ours; nccl: our pool
// on a GPU; ucx: our pool in host memory; ucx_staged, inproc: always). FAILED_PRECONDITION naming the
// peer, the offers and why each was passed over.
absl::StatusOr<TransportOffer> ChooseTransport(const std::vector<TransportOffer>& offers,
                                               const TransportChoiceInput& in, std::string_view peer);

}  // namespace tandem
