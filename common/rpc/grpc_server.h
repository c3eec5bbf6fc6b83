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
class ServerCredentials;
}  // namespace grpc

namespace tandem {

// What one server lets a peer take: every tandem server has these limits,
// from the --grpc_* flags (FromFlags) unless a caller sets its own.
struct GrpcServerLimits {
  // Largest message received / sent (a request id, prompt and descriptor
  // are far below; a 3 MB field is refused before it is parsed).
  int32_t max_receive_message_bytes = 4 << 20;
  int32_t max_send_message_bytes = 16 << 20;
  // HTTP/2 streams (calls) at once per connection.
  int32_t max_concurrent_streams = 1024;
  // Memory gRPC may use for this server's connections and calls (a
  // grpc::ResourceQuota); past it new calls are refused, not the process
  // killed.
  int64_t memory_quota_bytes = int64_t{1} << 30;
  // Most gRPC threads serving sync calls at once (the quota's thread limit).
  int32_t max_threads = 1024;
  // Keepalive enforcement: a client pinging more often than this, or
  // without calls, gets strikes and then GOAWAY.
  int32_t min_ping_interval_ms = 10000;
  int32_t max_ping_strikes = 2;

  static GrpcServerLimits FromFlags();
};

// INVALID_ARGUMENT naming the flag.
absl::Status ValidateGrpcServerLimits(const GrpcServerLimits& limits);

class GrpcServer {
 public:
  // `address` is host:port; port 0 binds a free port (see port()).
  // `credentials`: the port's transport security and per-call checks
  // (ClusterSecurity::ServerCredentials, tls_credentials.h); null:
  // plaintext with no checks.
  static absl::StatusOr<std::unique_ptr<GrpcServer>> Start(
      const std::string& address, const std::vector<grpc::Service*>& services,
      const GrpcServerLimits& limits = GrpcServerLimits::FromFlags(),
      std::shared_ptr<grpc::ServerCredentials> credentials = nullptr);
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
  // Kept as long as the server: its metadata processor serves every call.
  std::shared_ptr<grpc::ServerCredentials> credentials_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  bool shut_down_ = false;
};

}  // namespace tandem
