// The prefill worker's gRPC face (PrefillService in worker.proto): checks a
// request, queues it on the PrefillLoop and waits for its first token while
// watching for cancellation and the deadline.
#pragma once

#include <atomic>
#include <functional>

#include "common/model/model_config.h"
#include "common/worker/fault_injector.h"
#include "prefill_worker/prefill_loop.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

class PrefillServiceImpl final : public v1::PrefillService::Service {
 public:
  PrefillServiceImpl(const ModelConfig& config, int32_t kv_blocks_total, int32_t block_size,
                     PrefillLoop& loop);
  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                       v1::PrefillResponse* resp) override;
  grpc::Status GetLoad(grpc::ServerContext* ctx, const v1::GetLoadRequest* req,
                       v1::LoadReport* resp) override;
  // The worker's load, as reported to the router (set before serving).
  void SetLoadReporter(std::function<v1::LoadReport()> load) { load_ = std::move(load); }
  void SetDraining() { draining_ = true; }
  // --fault_rpc_failure_rate: Prefill fails that fraction of calls (set
  // before serving; null: none).
  void SetFaultInjector(FaultInjector* faults) { faults_ = faults; }

 private:
  const ModelConfig& config_;
  const int32_t kv_blocks_total_;
  const int32_t block_size_;
  PrefillLoop& loop_;
  std::atomic<bool> draining_{false};
  std::function<v1::LoadReport()> load_;
  FaultInjector* faults_ = nullptr;
};

}  // namespace tandem
