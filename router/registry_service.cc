#include "router/registry_service.h"

#include "common/rpc/status_convert.h"
#include "router/router_instance.h"

namespace tandem::router {

grpc::Status RegistryService::RegisterWorker(grpc::ServerContext*, const v1::WorkerInfo* req,
                                             v1::RegisterWorkerResponse* resp) {
  absl::StatusOr<std::string> id = registry_.Register(*req);
  if (!id.ok()) return ToGrpcStatus(id.status());
  resp->set_worker_id(*id);
  resp->set_report_interval_seconds(absl::ToDoubleSeconds(registry_.options().report_interval));
  resp->set_router_instance(RouterInstanceId());
  return grpc::Status::OK;
}

grpc::Status RegistryService::ReportLoad(grpc::ServerContext*, const v1::LoadReport* req,
                                         v1::LoadReportResponse* resp) {
  resp->set_known(registry_.Report(*req));
  // Only a known worker's events: an unknown one registers again, and its
  // first report after that carries its full set.
  if (resp->known() && index_ != nullptr && req->has_block_events()) {
    resp->set_resync_block_events(index_->Apply(req->worker_id(), req->block_events(), absl::Now()));
  }
  return grpc::Status::OK;
}

}  // namespace tandem::router
