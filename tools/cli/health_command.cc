#include "tools/cli/health_command.h"

#include <chrono>
#include <iostream>

#include "absl/flags/flag.h"
#include "common/rpc/tls_flags.h"
#include "grpc/health/v1/health.grpc.pb.h"

ABSL_FLAG(std::string, address, "127.0.0.1:8000", "health: the process to check, host:port");
ABSL_FLAG(double, timeout_seconds, 5.0, "health: give up after this long");

namespace tandem::cli {

int RunHealth() {
  absl::StatusOr<std::shared_ptr<const ClusterSecurity>> security = ClusterSecurity::Load(TlsOptionsFromFlags());
  if (!security.ok()) {
    std::cerr << "tandem health: " << security.status() << "\n";
    return 2;
  }
  auto stub = grpc::health::v1::Health::NewStub((*security)->Dial(absl::GetFlag(FLAGS_address)));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::duration_cast<std::chrono::system_clock::duration>(
                       std::chrono::duration<double>(absl::GetFlag(FLAGS_timeout_seconds))));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status s = stub->Check(&ctx, req, &resp);
  if (!s.ok()) {
    std::cerr << "tandem health: " << absl::GetFlag(FLAGS_address) << ": " << s.error_message() << "\n";
    return 1;
  }
  const bool serving = resp.status() == grpc::health::v1::HealthCheckResponse::SERVING;
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
  return serving ? 0 : 1;
}

}  // namespace tandem::cli
