#include "common/rpc/grpc_server.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/server_builder.h"

ABSL_FLAG(int32_t, grpc_max_receive_message_bytes, 4 << 20, "largest gRPC message this server accepts");
ABSL_FLAG(int32_t, grpc_max_send_message_bytes, 16 << 20, "largest gRPC message this server sends");
ABSL_FLAG(int32_t, grpc_max_concurrent_streams, 1024, "most concurrent gRPC calls per connection");
ABSL_FLAG(int64_t, grpc_memory_quota_bytes, int64_t{1} << 30, "memory gRPC may use for this server (ResourceQuota)");
ABSL_FLAG(int32_t, grpc_max_threads, 1024, "most threads serving gRPC calls at once (ResourceQuota)");
ABSL_FLAG(int32_t, grpc_min_ping_interval_ms, 10000,
          "clients pinging more often than this (or with no call open) are sent GOAWAY after a few strikes");

namespace tandem {

GrpcServerLimits GrpcServerLimits::FromFlags() {
  GrpcServerLimits l;
  l.max_receive_message_bytes = absl::GetFlag(FLAGS_grpc_max_receive_message_bytes);
  l.max_send_message_bytes = absl::GetFlag(FLAGS_grpc_max_send_message_bytes);
  l.max_concurrent_streams = absl::GetFlag(FLAGS_grpc_max_concurrent_streams);
  l.memory_quota_bytes = absl::GetFlag(FLAGS_grpc_memory_quota_bytes);
  l.max_threads = absl::GetFlag(FLAGS_grpc_max_threads);
  l.min_ping_interval_ms = absl::GetFlag(FLAGS_grpc_min_ping_interval_ms);
  return l;
}

absl::Status ValidateGrpcServerLimits(const GrpcServerLimits& l) {
  if (l.max_receive_message_bytes < 1024 || l.max_send_message_bytes < 1024) {
    return absl::InvalidArgumentError("--grpc_max_receive_message_bytes and --grpc_max_send_message_bytes must be >= 1024");
  }
  if (l.max_concurrent_streams < 1) return absl::InvalidArgumentError("--grpc_max_concurrent_streams must be positive");
  if (l.memory_quota_bytes < (int64_t{16} << 20)) {
    return absl::InvalidArgumentError("--grpc_memory_quota_bytes must be at least 16 MiB");
  }
  if (l.max_threads < 4) return absl::InvalidArgumentError("--grpc_max_threads must be at least 4");
  if (l.min_ping_interval_ms < 0) return absl::InvalidArgumentError("--grpc_min_ping_interval_ms must be >= 0");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GrpcServer>> GrpcServer::Start(
    const std::string& address, const std::vector<grpc::Service*>& services, const GrpcServerLimits& limits,
    std::shared_ptr<grpc::ServerCredentials> credentials) {
  if (absl::Status s = ValidateGrpcServerLimits(limits); !s.ok()) return s;
  // Both are process-wide switches read when a builder is created.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  int port = 0;
  if (credentials == nullptr) credentials = grpc::InsecureServerCredentials();
  builder.AddListeningPort(address, credentials, &port);
  for (grpc::Service* s : services) builder.RegisterService(s);
  // Keepalive pings on open calls (a long token stream stays up through
  // idle proxies); a connection without calls is not kept busy, and a
  // client that floods pings (or pings with no call open) is told to go.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, limits.min_ping_interval_ms);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, limits.max_ping_strikes);
  // Limits: what one peer can make this process hold.
  builder.SetMaxReceiveMessageSize(limits.max_receive_message_bytes);
  builder.SetMaxSendMessageSize(limits.max_send_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams);
  grpc::ResourceQuota quota("tandem-server");
  quota.Resize(static_cast<size_t>(limits.memory_quota_bytes));
  quota.SetMaxThreads(limits.max_threads);
  builder.SetResourceQuota(quota);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  auto s = std::unique_ptr<GrpcServer>(new GrpcServer());
  s->credentials_ = std::move(credentials);
  s->server_ = std::move(server);
  s->port_ = port;
  const std::string host = address.substr(0, address.rfind(':'));
  s->address_ = absl::StrCat(host == "0.0.0.0" || host == "[::]" ? "127.0.0.1" : host, ":", port);
  s->SetServing(true);
  return s;
}

GrpcServer::~GrpcServer() { Shutdown(absl::ZeroDuration()); }

void GrpcServer::SetServing(bool serving) {
  if (auto* health = server_->GetHealthCheckService()) health->SetServingStatus(serving);
}

void GrpcServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
}

void GrpcServer::Wait() { server_->Wait(); }

}  // namespace tandem
