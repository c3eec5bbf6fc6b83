// The public GenerationService: what clients call. Tokenize, Detokenize and
// GetModelInfo are answered here; each Generate is a GenerateCall.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common/metrics/serving_metrics.h"
#include "common/model/generation_config.h"
#include "common/model/model_config.h"
#include "common/tokenizer/tokenizer.h"
#include "router/admission_queue.h"
#include "router/generate_sink.h"
#include "router/placement_metrics.h"
#include "router/placement_policy.h"
#include "router/prefix_index.h"
#include "router/router_config.h"
#include "router/worker_registry.h"
#include "tandem/v1/generate.grpc.pb.h"

namespace tandem::router {

// What every GenerateCall reads; immutable after start except the counters.
struct RouterContext {
  RouterConfig config;
  std::string model_name;
  // What clients see as the model's name (GetModelInfo, the HTTP API):
  // --served_model_name, else model_name.
  std::string served_model_name;
  ModelConfig model;
  std::unique_ptr<Tokenizer> tokenizer;
  // config.json's EOS ids merged with generation_config.json's.
  std::vector<int32_t> eos_ids;
  // generation_config.json's sampling defaults, filled into every request
  // (gRPC and HTTP) that leaves the field unset, before it is validated.
  GenerationConfig generation_defaults;
  WorkerRegistry* registry = nullptr;
  RouterMetrics* metrics = nullptr;
  // Cache-aware placement: the index the registry service feeds (null:
  // placement never sees a cached prefix), the policy (null: the
  // GenerationServiceImpl makes one from `config`), and its metrics (null:
  // not recorded).
  PrefixIndex* prefix_index = nullptr;
  PlacementPolicy* placement = nullptr;
  PlacementMetrics* placement_metrics = nullptr;
  std::atomic<int64_t> next_request{0};
};

// Fills the sampling fields a request left unset with the model's
// generation_config.json defaults (proto3 presence tells them apart).
void ApplyModelSamplingDefaults(const GenerationConfig& defaults, v1::SamplingParameters* p);

class GenerationServiceImpl final : public v1::GenerationService::Service {
 public:
  explicit GenerationServiceImpl(RouterContext& ctx);

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* req,
                        v1::TokenizeResponse* resp) override;
  grpc::Status Detokenize(grpc::ServerContext* ctx, const v1::DetokenizeRequest* req,
                          v1::DetokenizeResponse* resp) override;
  grpc::Status GetModelInfo(grpc::ServerContext* ctx, const v1::GetModelInfoRequest* req,
                            v1::ModelInfo* resp) override;

  // One request through admission and a GenerateCall, its responses
  // written to `sink`: what Generate does for the gRPC stream and the HTTP
  // API (router/http) for its own. Blocks the calling thread until done.
  grpc::Status Serve(const v1::GenerateRequest& req, GenerateSink& sink);
  // Whether a request could be placed now: a live decode or aggregated
  // worker (the HTTP /health and the gRPC health status follow it).
  bool CanPlace() const;

 private:
  // The in-flight limit: --max_inflight_requests, or from the live
  // workers' batch sizes.
  int32_t MaxRunning() const;

  RouterContext& ctx_;
  std::unique_ptr<PlacementPolicy> own_placement_;  // when ctx_ brought none
  AdmissionQueue admission_;
};

}  // namespace tandem::router
