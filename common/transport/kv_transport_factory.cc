// CreateKvTransport: the transport names and what each is made of. The
// UCX and CUDA IPC names are composites (composite_transport.h) so that
// every one of them reads the multi-offer descriptors of an "auto" peer.
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/transport/composite_transport.h"
#include "common/transport/cuda_ipc_transport.h"
#include "common/transport/inproc_transport.h"
#include "common/transport/kv_transport.h"
#include "common/transport/nccl_ops.h"
#include "common/transport/nccl_protocol.h"
#include "common/transport/nccl_transport.h"
#include "common/transport/transport_selection.h"
#include "common/transport/ucx_staged_transport.h"
#include "common/transport/ucx_transport.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

#ifndef TANDEM_TRANSPORT_CUDA
absl::StatusOr<std::unique_ptr<KvTransport>> MakeCudaIpcTransport(CudaIpcOptions) {
  return absl::UnimplementedError("the cuda_ipc KV transport needs a build with CUDA (TANDEM_CUDA=ON)");
}
#endif

#ifndef TANDEM_TRANSPORT_NCCL
absl::StatusOr<std::unique_ptr<NcclOps>> MakeCudaNcclOps() {
  return absl::UnimplementedError("the nccl KV transport needs a build with CUDA and NCCL (TANDEM_WITH_NCCL)");
}
#endif

std::vector<std::string> KvTransportNames() {
  return {std::string(kTransportAuto), std::string(kTransportCudaIpc), std::string(kTransportNccl),
          std::string(kTransportUcx),
          std::string(kTransportUcxStaged), std::string(kTransportInProcess)};
}

namespace {

absl::StatusOr<std::unique_ptr<KvTransport>> MakePart(std::string_view name) {
  if (name == kTransportCudaIpc) return MakeCudaIpcTransport();
  if (name == kTransportNccl) return MakeNcclTransport();
  if (name == kTransportUcx) return MakeUcxTransport();
  if (name == kTransportUcxStaged) return MakeUcxStagedTransport();
  return absl::InvalidArgumentError(absl::StrCat("no KV transport part '", std::string(name), "'"));
}

absl::StatusOr<std::unique_ptr<KvTransport>> Composite(std::string_view name, std::vector<std::string_view> parts,
                                                       bool all_required) {
  std::vector<std::unique_ptr<KvTransport>> made;
  for (std::string_view p : parts) {
    absl::StatusOr<std::unique_ptr<KvTransport>> t = MakePart(p);
    if (t.ok()) {
      made.push_back(std::move(*t));
      continue;
    }
    if (all_required) return t.status();
    // auto runs with what this build and host offer (no CUDA: no cuda_ipc).
    TANDEM_LOG(INFO) << "KV transport " << p << " unavailable: " << t.status();
  }
  if (made.empty()) return absl::UnavailableError(absl::StrCat("no part of KV transport '", std::string(name), "' is available"));
  return std::unique_ptr<KvTransport>(new CompositeTransport(std::string(name), std::move(made)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransport>> CreateKvTransport(std::string_view name) {
  // Parts in preference order (transport_selection.h).
  if (name == kTransportAuto) {
    return Composite(name, {kTransportCudaIpc, kTransportNccl, kTransportUcx, kTransportUcxStaged},
                     /*all_required=*/false);
  }
  if (name == kTransportUcx) return Composite(name, {kTransportUcx, kTransportUcxStaged}, true);
  if (name == kTransportUcxStaged) return Composite(name, {kTransportUcxStaged}, true);
  if (name == kTransportCudaIpc) return Composite(name, {kTransportCudaIpc}, true);
  if (name == kTransportNccl) return Composite(name, {kTransportNccl}, true);
  if (name == kTransportInProcess) return MakeInProcessTransport();
  return absl::InvalidArgumentError(absl::StrCat("unknown KV transport '", std::string(name), "' (",
                                                 absl::StrJoin(KvTransportNames(), ", "), ")"));
}

}  // namespace tandem
