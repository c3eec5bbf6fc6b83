#include "router/generation_service.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/rpc/status_convert.h"
#include "router/generate_call.h"

namespace tandem::router {

GenerationServiceImpl::GenerationServiceImpl(RouterContext& ctx)
    : ctx_(ctx),
      admission_(AdmissionOptions{[this] { return MaxRunning(); }, ctx.config.max_queued_requests}) {
  if (ctx_.placement == nullptr) {
    own_placement_ = std::make_unique<PlacementPolicy>(PlacementOptionsFrom(ctx_.config), *ctx_.registry,
                                                        ctx_.prefix_index);
    ctx_.placement = own_placement_.get();
  }
}

int32_t GenerationServiceImpl::MaxRunning() const {
  if (ctx_.config.max_inflight_requests > 0) return ctx_.config.max_inflight_requests;
  int64_t batch = 0;
  for (const WorkerView& w : ctx_.registry->Snapshot()) {
    if (w.role == v1::WORKER_ROLE_DECODE || w.role == v1::WORKER_ROLE_AGGREGATED) {
      batch += std::max(1, w.info.max_batch_size());
    }
  }
  // With no worker yet, one request at a time finds that out.
  return static_cast<int32_t>(std::clamp<int64_t>(2 * batch, 1, 1 << 20));
}

grpc::Status GenerationServiceImpl::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                             grpc::ServerWriter<v1::GenerateResponse>* writer) {
  GrpcGenerateSink sink(ctx, writer);
  return Serve(*req, sink);
}

bool GenerationServiceImpl::CanPlace() const {
  return ctx_.registry->CountLive(v1::WORKER_ROLE_DECODE) + ctx_.registry->CountLive(v1::WORKER_ROLE_AGGREGATED) > 0;
}

void ApplyModelSamplingDefaults(const GenerationConfig& defaults, v1::SamplingParameters* p) {
  SamplingFieldsSet set;
  set.temperature = p->has_temperature();
  set.top_p = p->has_top_p();
  set.top_k = p->has_top_k();
  set.repetition_penalty = p->has_repetition_penalty();
  float temperature = p->temperature(), top_p = p->top_p(), repetition_penalty = p->repetition_penalty();
  int32_t top_k = p->top_k();
  ApplySamplingDefaults(defaults, set, &temperature, &top_p, &top_k, &repetition_penalty);
  if (!set.temperature && defaults.temperature) p->set_temperature(temperature);
  if (!set.top_p && defaults.top_p) p->set_top_p(top_p);
  if (!set.top_k && defaults.top_k) p->set_top_k(top_k);
  if (!set.repetition_penalty && defaults.repetition_penalty) p->set_repetition_penalty(repetition_penalty);
}

grpc::Status GenerationServiceImpl::Serve(const v1::GenerateRequest& request, GenerateSink& sink) {
  const v1::GenerateRequest* req = &request;
  // The model's defaults go into a copy, only when it has any.
  v1::GenerateRequest with_defaults;
  if (ctx_.generation_defaults.has_sampling_defaults()) {
    with_defaults = request;
    ApplyModelSamplingDefaults(ctx_.generation_defaults, with_defaults.mutable_sampling());
    req = &with_defaults;
  }
  // Overload: past the in-flight limit requests wait in a bounded queue,
  // by priority, then TTFT deadline; refused only when it is full or
  // their deadline cannot be met.
  const absl::Time arrival = absl::Now();
  AdmissionQueue::Request r;
  r.priority = req->priority();
  const double ttft = req->slo().has_ttft_seconds() ? req->slo().ttft_seconds() : ctx_.config.slo_ttft_seconds;
  r.ttft_deadline = arrival + absl::Seconds(ttft);
  if (sink.deadline() != absl::InfiniteFuture()) r.deadline = sink.deadline();
  r.client_gone = [&sink] { return sink.IsCancelled(); };
  ctx_.metrics->requests_waiting->Increment();
  absl::StatusOr<AdmissionQueue::Ticket> ticket = admission_.Enter(r);
  ctx_.metrics->requests_waiting->Decrement();
  if (!ticket.ok()) {
    const grpc::Status s = ToGrpcStatus(ticket.status());
    ctx_.metrics->Requests(s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ? "resource_exhausted"
                           : s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? "deadline_exceeded"
                                                                                    : "cancelled",
                           "none")
        .Increment();
    return s;
  }
  ctx_.metrics->requests_running->Increment();
  GenerateCall call(ctx_, sink, *req, arrival);
  grpc::Status s = call.Run();
  call.RecordOutcome(s);
  ctx_.metrics->requests_running->Decrement();
  return s;
}

grpc::Status GenerationServiceImpl::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* req,
                                             v1::TokenizeResponse* resp) {
  const bool add = req->has_add_special_tokens() ? req->add_special_tokens() : true;
  for (int32_t id : ctx_.tokenizer->Encode(req->text(), add)) {
    resp->add_token_ids(id);
    resp->add_tokens(ctx_.tokenizer->IdToToken(id));
  }
  return grpc::Status::OK;
}

grpc::Status GenerationServiceImpl::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* req,
                                               v1::DetokenizeResponse* resp) {
  for (int32_t id : req->token_ids()) {
    if (id < 0 || id >= ctx_.tokenizer->vocab_size()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("token id ", id, " is outside the vocabulary [0, ",
                                       ctx_.tokenizer->vocab_size(), ")"));
    }
  }
  std::vector<int32_t> ids(req->token_ids().begin(), req->token_ids().end());
  resp->set_text(ctx_.tokenizer->Decode(ids, req->skip_special_tokens()));
  return grpc::Status::OK;
}

grpc::Status GenerationServiceImpl::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                                                 v1::ModelInfo* resp) {
  const ModelConfig& m = ctx_.model;
  resp->set_name(ctx_.served_model_name.empty() ? ctx_.model_name : ctx_.served_model_name);
  resp->set_architecture(m.architecture);
  resp->set_vocab_size(m.vocab_size);
  resp->set_max_context_length(m.max_position_embeddings);
  resp->set_num_layers(static_cast<int32_t>(m.num_hidden_layers));
  resp->set_hidden_size(static_cast<int32_t>(m.hidden_size));
  resp->set_num_attention_heads(static_cast<int32_t>(m.num_attention_heads));
  resp->set_num_key_value_heads(static_cast<int32_t>(m.num_key_value_heads));
  resp->set_head_dim(static_cast<int32_t>(m.head_dim));
  resp->set_dtype(m.torch_dtype == DType::kBF16 ? "bfloat16" : m.torch_dtype == DType::kF16 ? "float16" : "float32");
  if (m.bos_token_id >= 0) resp->set_bos_token_id(static_cast<int32_t>(m.bos_token_id));
  for (int32_t id : ctx_.eos_ids) resp->add_eos_token_ids(id);
  const GenerationConfig& g = ctx_.generation_defaults;
  if (g.temperature) resp->set_default_temperature(*g.temperature);
  if (g.top_p) resp->set_default_top_p(*g.top_p);
  if (g.top_k) resp->set_default_top_k(*g.top_k);
  if (g.repetition_penalty) resp->set_default_repetition_penalty(*g.repetition_penalty);
  int64_t blocks = 0;
  for (const WorkerView& w : ctx_.registry->Snapshot()) {
    if (w.role == v1::WORKER_ROLE_DECODE || w.role == v1::WORKER_ROLE_AGGREGATED) {
      blocks += w.info.kv_blocks_total();
      resp->set_kv_block_size(w.info.kv_layout().block_size());
    }
  }
  resp->set_kv_blocks_total(blocks);
  resp->set_prefill_workers(ctx_.registry->CountLive(v1::WORKER_ROLE_PREFILL));
  resp->set_decode_workers(ctx_.registry->CountLive(v1::WORKER_ROLE_DECODE));
  resp->set_aggregated_workers(ctx_.registry->CountLive(v1::WORKER_ROLE_AGGREGATED));
  resp->set_version("0.1.0");
  return grpc::Status::OK;
}

}  // namespace tandem::router
