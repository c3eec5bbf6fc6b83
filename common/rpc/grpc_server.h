// Starting a gRPC server the way every tandem process does: the standard
// grpc.health.v1 service and server reflection on, the bound port known
// (":0" picks a free one), and a graceful shutdown.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "grpcpp/support/config.h"

namespace grpc {
class Service;
}  // namespace grpc

namespace tandem {

class GrpcServer {
 public:
  // `address` is host:port; port 0 binds a free port (see port()).
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(const std::string& address,
                                                           const std::vector<grpc::Service*>& services);
  ~GrpcServer();

  int port() const { return port_; }
  // host:port as peers should dial it.
  const std::string& address() const { return address_; }
  // SERVING / NOT_SERVING for the overall server ("") in grpc.health.v1.
  void SetServing(bool serving);
  // Stops accepting calls and waits up to `grace` for running ones, then
  // cancels what is left.
  void Shutdown(absl::Duration grace);
  void Wait();

 private:
  GrpcServer() = default;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  bool shut_down_ = false;
};

}  // namespace tandem
