// Where one GenerateCall's responses go and how it learns that its client
// left: the gRPC stream and the HTTP API (router/http) are two sinks of the
// same call, so admission, validation and placement stay one code path.
#pragma once

#include <chrono>
#include <string>

#include "absl/time/time.h"
#include "common/request/cache_salt.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/sync_stream.h"
#include "tandem/v1/generate.pb.h"

namespace tandem::router {

class GenerateSink {
 public:
  virtual ~GenerateSink() = default;
  // Called by the request's own thread only. False: the client is gone;
  // the call stops and frees what it holds on the workers.
  virtual bool Write(const v1::GenerateResponse& resp) = 0;
  // Polled by the process-wide cancel watcher's thread (every 10 ms) and
  // by the admission queue: must be thread-safe and cheap.
  virtual bool IsCancelled() const = 0;
  // When the client's call ends; InfiniteFuture for no deadline.
  virtual absl::Time deadline() const = 0;
  // The bearer token the client sent (empty: none). With API tokens
  // checked it names the tenant, whose cached KV no other token shares
  // (EffectiveCacheSalt); unchecked, a client only partitions itself.
  virtual std::string api_token() const { return ""; }
};

// The public gRPC Generate stream.
class GrpcGenerateSink final : public GenerateSink {
 public:
  GrpcGenerateSink(grpc::ServerContext* ctx, grpc::ServerWriter<v1::GenerateResponse>* writer)
      : ctx_(ctx), writer_(writer) {}
  bool Write(const v1::GenerateResponse& resp) override { return writer_->Write(resp); }
  bool IsCancelled() const override { return ctx_->IsCancelled(); }
  absl::Time deadline() const override {
    return ctx_->deadline() == std::chrono::system_clock::time_point::max() ? absl::InfiniteFuture()
                                                                            : absl::FromChrono(ctx_->deadline());
  }
  std::string api_token() const override {
    const auto& md = ctx_->client_metadata();
    auto it = md.find("authorization");
    if (it == md.end()) return "";
    return std::string(BearerToken(std::string_view(it->second.data(), it->second.size())));
  }

 private:
  grpc::ServerContext* ctx_;
  grpc::ServerWriter<v1::GenerateResponse>* writer_;
};

}  // namespace tandem::router
