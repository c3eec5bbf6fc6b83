#include "router/generation_service.h"

#include "absl/strings/str_cat.h"
#include "router/generate_call.h"

namespace tandem::router {

grpc::Status GenerationServiceImpl::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                             grpc::ServerWriter<v1::GenerateResponse>* writer) {
  // Overload: a bounded number of requests in flight, not an unbounded queue.
  const int32_t inflight = ctx_.inflight.fetch_add(1) + 1;
  if (inflight > ctx_.config.max_inflight_requests) {
    ctx_.inflight.fetch_sub(1);
    ctx_.metrics->Requests("resource_exhausted", "none").Increment();
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        absl::StrCat("router has ", inflight - 1, " requests in flight (limit ",
                                     ctx_.config.max_inflight_requests, ")"));
  }
  ctx_.metrics->requests_running->Increment();
  GenerateCall call(ctx_, ctx, *req, writer);
  grpc::Status s = call.Run();
  call.RecordOutcome(s);
  ctx_.metrics->requests_running->Decrement();
  ctx_.inflight.fetch_sub(1);
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
  resp->set_name(ctx_.model_name);
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
  int64_t blocks = 0;
  for (const WorkerView& w : ctx_.registry->Snapshot()) {
    if (w.role == v1::WORKER_ROLE_DECODE) {
      blocks += w.info.kv_blocks_total();
      resp->set_kv_block_size(w.info.kv_layout().block_size());
    }
  }
  resp->set_kv_blocks_total(blocks);
  resp->set_prefill_workers(ctx_.registry->CountLive(v1::WORKER_ROLE_PREFILL));
  resp->set_decode_workers(ctx_.registry->CountLive(v1::WORKER_ROLE_DECODE));
  resp->set_version("0.1.0");
  return grpc::Status::OK;
}

}  // namespace tandem::router
