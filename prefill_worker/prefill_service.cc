#include "prefill_worker/prefill_service.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/request/request_validation.h"
#include "common/rpc/proto_convert.h"
#include "common/rpc/status_convert.h"
#include "common/sampling/sampling_params.h"

namespace tandem {

PrefillServiceImpl::PrefillServiceImpl(const ModelConfig& config, int32_t kv_blocks_total,
                                       int32_t block_size, PrefillLoop& loop)
    : config_(config), kv_blocks_total_(kv_blocks_total), block_size_(block_size), loop_(loop) {}

grpc::Status PrefillServiceImpl::GetLoad(grpc::ServerContext*, const v1::GetLoadRequest*,
                                         v1::LoadReport* resp) {
  if (!load_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "prefill worker is starting");
  *resp = load_();
  return grpc::Status::OK;
}

grpc::Status PrefillServiceImpl::Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                                         v1::PrefillResponse* resp) {
  if (draining_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "prefill worker is draining");
  if (faults_ != nullptr) {
    if (absl::Status s = faults_->MaybeFail("Prefill"); !s.ok()) return ToGrpcStatus(s);
  }
  auto job = std::make_shared<PrefillJob>();
  job->request_id = req->request_id();
  job->prompt.assign(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
  job->sampling = FromProto(req->sampling(),
                            req->has_logprobs() ? std::optional<int32_t>(req->logprobs()) : std::nullopt);
  job->seed = req->seed();
  job->priority = req->priority();
  job->cache_salt = req->cache_salt();
  job->destination = req->destination();
  job->enqueued = absl::Now();
  if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
    job->deadline = absl::FromChrono(ctx->deadline());
  }
  absl::Status valid = ValidateRequestId(job->request_id);
  if (valid.ok()) valid = ValidateSamplingParams(job->sampling, config_.vocab_size);
  if (valid.ok()) valid = ValidatePromptTokens(job->prompt, config_);
  const int64_t blocks = (static_cast<int64_t>(job->prompt.size()) + block_size_) / block_size_;
  if (valid.ok() && blocks > kv_blocks_total_) {
    valid = absl::ResourceExhaustedError(absl::StrCat("prompt of ", job->prompt.size(),
                                                      " tokens exceeds the prefill worker's KV pool"));
  }
  if (valid.ok() && req->destination().block_ids().empty()) {
    valid = absl::InvalidArgumentError("destination has no KV blocks");
  }
  if (valid.ok()) valid = ValidateCacheSalt(job->cache_salt, kMaxEffectiveCacheSaltBytes);
  // The destination's cached prefix holds whole blocks of the prompt but
  // never its last token, so at least one block is always shipped.
  if (valid.ok() && (req->destination().num_cached_blocks() < 0 ||
                     static_cast<int64_t>(req->destination().num_cached_blocks()) * block_size_ >=
                         static_cast<int64_t>(job->prompt.size()) ||
                     req->destination().num_cached_blocks() > req->destination().block_ids_size())) {
    valid = absl::InvalidArgumentError(absl::StrCat("destination claims ", req->destination().num_cached_blocks(),
                                                    " cached blocks for a prompt of ", job->prompt.size(), " tokens"));
  }
  if (!valid.ok()) return ToGrpcStatus(valid);

  loop_.Submit(job);
  for (;;) {
    std::optional<PrefillResult> r = job->Wait(absl::Milliseconds(20));
    if (!r && ctx->IsCancelled()) {
      job->Cancel();
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the router");
    }
    if (!r) continue;
    if (!r->status.ok()) return ToGrpcStatus(r->status);
    v1::GeneratedToken first = ToProto(r->first_token);
    *resp->mutable_first_token() = first;
    resp->set_queue_seconds(r->queue_seconds);
    resp->set_prefill_seconds(r->prefill_seconds);
    resp->set_transfer_seconds(r->transfer_seconds);
    resp->set_kv_bytes(r->kv_bytes);
    resp->set_kv_completion(r->kv_completion);
    return grpc::Status::OK;
  }
}

}  // namespace tandem
