// The WorkerRegistry gRPC service: workers register and report load here,
// and their load reports carry the block events the prefix index is fed with.
#pragma once

#include "router/prefix_index.h"
#include "router/worker_registry.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem::router {

class RegistryService final : public v1::WorkerRegistry::Service {
 public:
  // `index` may be null (no cache-aware placement): block events are dropped.
  explicit RegistryService(WorkerRegistry& registry, PrefixIndex* index = nullptr)
      : registry_(registry), index_(index) {}
  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const v1::WorkerInfo* req,
                              v1::RegisterWorkerResponse* resp) override;
  grpc::Status ReportLoad(grpc::ServerContext* ctx, const v1::LoadReport* req,
                          v1::LoadReportResponse* resp) override;

 private:
  WorkerRegistry& registry_;
  PrefixIndex* index_;
};

}  // namespace tandem::router
