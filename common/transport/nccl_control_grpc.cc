// The NCCL transport's control path over gRPC: DecodeService.StartNcclTransfer
// on the decode worker's own server (its worker id is its address).
#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/rpc/cluster_channel.h"
#include "common/transport/nccl_transport.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {
namespace {

class GrpcNcclControl final : public NcclControl {
 public:
  absl::Status Send(const std::string& address, const v1::NcclTransferRequest& req, absl::Time deadline) override {
    v1::DecodeService::Stub* stub = StubFor(address);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline));
    v1::NcclTransferResponse resp;
    const grpc::Status s = stub->StartNcclTransfer(&ctx, req, &resp);
    if (s.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("StartNcclTransfer on ", address, ": ", s.error_message()));
  }

 private:
  v1::DecodeService::Stub* StubFor(const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    std::unique_ptr<v1::DecodeService::Stub>& stub = stubs_[address];
    if (stub == nullptr) {
      stub = v1::DecodeService::NewStub(DialCluster(address));
    }
    return stub.get();
  }

  std::mutex mu_;
  std::map<std::string, std::unique_ptr<v1::DecodeService::Stub>> stubs_;
};

}  // namespace

std::unique_ptr<NcclControl> MakeGrpcNcclControl() { return std::make_unique<GrpcNcclControl>(); }

}  // namespace tandem
