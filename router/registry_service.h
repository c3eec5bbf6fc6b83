// The WorkerRegistry gRPC service: workers register and report load here.
#pragma once

#include "router/worker_registry.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem::router {

class RegistryService final : public v1::WorkerRegistry::Service {
 public:
  explicit RegistryService(WorkerRegistry& registry) : registry_(registry) {}
  grpc::Status RegisterWorker(grpc::ServerContext* ctx, const v1::WorkerInfo* req,
                              v1::RegisterWorkerResponse* resp) override;
  grpc::Status ReportLoad(grpc::ServerContext* ctx, const v1::LoadReport* req,
                          v1::LoadReportResponse* resp) override;

 private:
  WorkerRegistry& registry_;
};

}  // namespace tandem::router
