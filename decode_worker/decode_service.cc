#include "decode_worker/decode_service.h"

#include <algorithm>
#include <chrono>
#include <span>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/request/request_validation.h"
#include "common/rpc/proto_convert.h"
#include "common/rpc/status_convert.h"
#include "common/sampling/sampling_params.h"
#include "common/util/logging.h"

namespace tandem {
namespace {

// The most a reservation may be held unclaimed, whatever the caller asks:
// blocks of a caller that died come back within this.
constexpr double kMaxReservationTtlSeconds = 600.0;
constexpr double kDefaultReservationTtlSeconds = 10.0;
// A router instance id is 16 hex digits; anything much longer is not one.
constexpr size_t kMaxRouterInstanceBytes = 64;

// The status for a caller that is gone: its deadline passed or it cancelled.
grpc::Status CallerGone(grpc::ServerContext* ctx) {
  if (ctx->deadline() != std::chrono::system_clock::time_point::max() &&
      std::chrono::system_clock::now() >= ctx->deadline()) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the caller's deadline passed");
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "the caller cancelled");
}

}  // namespace

DecodeServiceImpl::DecodeServiceImpl(const ModelConfig& config, const KvLayout& layout,
                                     KvReservations& reservations, DecodeLoop& loop)
    : config_(config), layout_(layout), reservations_(reservations), loop_(loop), write_holds_(reservations) {}

void DecodeServiceImpl::SetPool(v1::KvPoolDescriptor pool) {
  absl::MutexLock lock(&pool_mu_);
  pool_ = std::move(pool);
}

grpc::Status DecodeServiceImpl::ReserveKv(grpc::ServerContext* ctx, const v1::ReserveKvRequest* req,
                                          v1::ReserveKvResponse* resp) {
  // Nothing is reserved for a caller that already gave up.
  if (ctx->IsCancelled()) return CallerGone(ctx);
  if (faults_ != nullptr) {
    if (absl::Status s = faults_->MaybeFail("ReserveKv"); !s.ok()) return ToGrpcStatus(s);
  }
  if (draining_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode worker is draining");
  }
  std::optional<v1::KvPoolDescriptor> pool;
  {
    absl::MutexLock lock(&pool_mu_);
    pool = pool_;
  }
  if (!pool) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode worker is starting");
  if (req->prompt_tokens() <= 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prompt_tokens must be positive");
  }
  if (absl::Status s = ValidateRequestId(req->request_id()); !s.ok()) return ToGrpcStatus(s);
  if (absl::Status s = ValidateRequestId(req->transfer_id()); !s.ok()) return ToGrpcStatus(s);
  const double ttl = std::min(req->ttl_seconds() > 0 ? req->ttl_seconds() : kDefaultReservationTtlSeconds,
                              kMaxReservationTtlSeconds);
  // The router names the transfer so it can release a reservation whose
  // response it never saw; a duplicate is refused by Reserve
  // (ALREADY_EXISTS) without touching the first one's blocks.
  const std::string transfer_id = !req->transfer_id().empty()
                                      ? req->transfer_id()
                                      : absl::StrCat(req->request_id(), "#", next_transfer_.fetch_add(1));
  if (req->router_instance().size() > kMaxRouterInstanceBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("router_instance is longer than ", kMaxRouterInstanceBytes, " bytes"));
  }
  // The prompt's cached prefix here, if the router sent the prompt: those
  // blocks lead the reservation and are not transferred again.
  std::vector<int32_t> cached_prefix;
  if (req->prompt_token_ids_size() > 0) {
    const std::span<const int32_t> prompt(req->prompt_token_ids().data(), req->prompt_token_ids().size());
    if (static_cast<int32_t>(prompt.size()) != req->prompt_tokens()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("prompt_token_ids holds ", prompt.size(), " ids but prompt_tokens is ",
                                       req->prompt_tokens()));
    }
    if (absl::Status s = ValidatePromptTokens(prompt, config_); !s.ok()) return ToGrpcStatus(s);
    if (absl::Status s = ValidateCacheSalt(req->cache_salt(), kMaxEffectiveCacheSaltBytes); !s.ok()) {
      return ToGrpcStatus(s);
    }
    if (prefix_cache_ != nullptr) cached_prefix = prefix_cache_->AcquireCachedPrefix(prompt, req->cache_salt());
  }
  const int32_t num_cached = static_cast<int32_t>(cached_prefix.size());
  // Tagged with the reserving router's instance: when this worker stops
  // reporting to it, the reservation goes (KvReservations::ReleaseOwnedBy).
  absl::StatusOr<std::vector<int32_t>> blocks =
      reservations_.Reserve(transfer_id, layout_.BlocksForTokens(req->prompt_tokens()),
                            absl::Now() + absl::Seconds(ttl), req->router_instance(), std::move(cached_prefix));
  if (!blocks.ok()) {
    return ToGrpcStatus(absl::Status(blocks.status().code(),
                                     absl::StrCat("decode worker ", pool->worker_id(), ": ",
                                                  blocks.status().message())));
  }
  if (ctx->IsCancelled()) {
    // The caller gave up while we reserved; it will never use these.
    reservations_.Release(transfer_id);
    return CallerGone(ctx);
  }
  resp->set_transfer_id(transfer_id);
  for (int32_t b : *blocks) resp->add_block_ids(b);
  resp->set_num_cached_blocks(num_cached);
  *resp->mutable_pool() = std::move(*pool);
  return grpc::Status::OK;
}

grpc::Status DecodeServiceImpl::ReleaseKv(grpc::ServerContext*, const v1::ReleaseKvRequest* req,
                                          v1::ReleaseKvResponse*) {
  reservations_.Release(req->transfer_id());
  return grpc::Status::OK;
}

grpc::Status DecodeServiceImpl::GetLoad(grpc::ServerContext*, const v1::GetLoadRequest*,
                                        v1::LoadReport* resp) {
  if (!load_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode worker is starting");
  *resp = load_();
  return grpc::Status::OK;
}

grpc::Status DecodeServiceImpl::StartNcclTransfer(grpc::ServerContext*, const v1::NcclTransferRequest* req,
                                                  v1::NcclTransferResponse*) {
  KvTransport* transport = transport_.load();
  if (transport == nullptr) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "decode worker is starting");
  // Only the blocks the transfer may write: a cached prefix is read-only.
  absl::StatusOr<std::vector<int32_t>> reserved = reservations_.WritableBlocks(req->transfer_id());
  if (!reserved.ok()) return ToGrpcStatus(reserved.status());
  KvReceiver* receiver = transport->receiver();
  if (receiver == nullptr) return ToGrpcStatus(NoAnnouncedTransfers(transport->name()));
  return ToGrpcStatus(receiver->AcceptAnnouncedTransfer(
      *req, *reserved, [this](const std::string& transfer_id) { reservations_.Release(transfer_id); }));
}

grpc::Status DecodeServiceImpl::HoldKvWrite(
    grpc::ServerContext* ctx, grpc::ServerReaderWriter<v1::KvWriteHoldResponse, v1::KvWriteHoldRequest>* stream) {
  return write_holds_.Serve(ctx, stream);
}

grpc::Status DecodeServiceImpl::Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                                       grpc::ServerWriter<v1::GenerateResponse>* writer) {
  ++open_decode_calls_;
  absl::Cleanup closed = [this] { --open_decode_calls_; };
  // Every exit before the claim below frees the reservation: it is this
  // call's from here on (the router's release of it is a no-op by then).
  if (faults_ != nullptr) {
    if (absl::Status s = faults_->MaybeFail("Decode"); !s.ok()) {
      reservations_.Release(req->transfer_id());
      return ToGrpcStatus(s);
    }
  }
  DecodeJob job;
  job.request_id = req->request_id();
  job.sampling = FromProto(req->sampling(),
                           req->has_logprobs() ? std::optional<int32_t>(req->logprobs()) : std::nullopt);
  job.stopping = FromProto(req->stopping());
  job.stopping.stop.clear();  // text-level stops are the router's
  absl::Status valid = ValidateGenerationParams(job.sampling, job.stopping, config_.vocab_size);
  if (valid.ok()) {
    valid = ValidatePromptTokens({req->prompt_token_ids().data(), static_cast<size_t>(req->prompt_token_ids().size())},
                                 config_);
  }
  if (!valid.ok()) {
    reservations_.Release(req->transfer_id());
    return ToGrpcStatus(valid);
  }
  if (valid.ok()) valid = ValidateCacheSalt(req->cache_salt(), kMaxEffectiveCacheSaltBytes);
  if (!valid.ok()) {
    reservations_.Release(req->transfer_id());
    return ToGrpcStatus(valid);
  }
  job.seed = req->seed();
  job.cache_salt = req->cache_salt();
  job.priority = req->priority();
  if (req->ttft_budget_seconds() > 0) job.deadline = absl::Now() + absl::Seconds(req->ttft_budget_seconds());
  job.stream = std::make_shared<DecodeStream>();
  if (req->local_prefill()) {
    // Nothing was reserved or sent: the loop computes the prompt itself,
    // in chunks mixed into its decode steps, and streams its first token.
    if (draining_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "worker is draining");
    job.tokens.assign(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
    job.prompt_len = static_cast<int32_t>(job.tokens.size());
    if (absl::Status fits = loop_.CheckFits(job.prompt_len); !fits.ok()) return ToGrpcStatus(fits);
    return Stream(ctx, req->request_id(), std::move(job), writer);
  }
  KvTransport* transport = transport_.load();
  if (KvReceiver* receiver = transport == nullptr ? nullptr : transport->receiver(); receiver != nullptr) {
    // NCCL: the prefill side's sends completing does not mean our receives
    // did; CUDA IPC: the event the prefill worker recorded after its copies
    // (kv_completion); other transports return at once. A failed receive
    // has already freed the reservation.
    absl::Time wait_until = absl::Now() + absl::Seconds(30);
    if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
      wait_until = std::min(wait_until, absl::FromChrono(ctx->deadline()));
    }
    absl::Status arrived = receiver->WaitReceived(req->transfer_id(), req->kv_completion(), wait_until);
    if (!arrived.ok()) {
      reservations_.Release(req->transfer_id());
      return ToGrpcStatus(arrived);
    }
  }
  // Checked before the claim: once claimed, the blocks are no longer the
  // reservations' to free.
  job.tokens.assign(req->prompt_token_ids().begin(), req->prompt_token_ids().end());
  job.prompt_len = static_cast<int32_t>(job.tokens.size());
  job.tokens.push_back(req->first_token().id());
  if (absl::StatusOr<std::vector<int32_t>> reserved = reservations_.Blocks(req->transfer_id());
      reserved.ok() && static_cast<int64_t>(reserved->size()) < layout_.BlocksForTokens(job.prompt_len)) {
    reservations_.Release(req->transfer_id());
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("reservation ", req->transfer_id(), " holds ", reserved->size(),
                                     " blocks, too few for a prompt of ", job.prompt_len, " tokens"));
  }
  absl::StatusOr<std::vector<int32_t>> blocks = reservations_.Claim(req->transfer_id());
  if (!blocks.ok()) return ToGrpcStatus(blocks.status());
  job.blocks = std::move(*blocks);
  return Stream(ctx, req->request_id(), std::move(job), writer);
}

grpc::Status DecodeServiceImpl::Stream(grpc::ServerContext* ctx, const std::string& request_id, DecodeJob job,
                                       grpc::ServerWriter<v1::GenerateResponse>* writer) {
  std::shared_ptr<DecodeStream> stream = job.stream;
  const SeqId id = loop_.Submit(std::move(job));

  for (;;) {
    std::vector<DecodeEvent> events = stream->Take(absl::Milliseconds(50));
    if (ctx->IsCancelled()) {
      loop_.Cancel(id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the router");
    }
    if (events.empty()) continue;
    v1::GenerateResponse resp;
    resp.set_request_id(request_id);
    bool finished = false;
    for (DecodeEvent& e : events) {
      if (e.reason == FinishReason::kError || e.reason == FinishReason::kCancelled) {
        return ToGrpcStatus(e.error);
      }
      if (e.sample.token >= 0) *resp.add_tokens() = ToProto(e.sample);
      if (e.finished) {
        resp.set_finish_reason(ToProto(e.reason));
        finished = true;
      }
    }
    if (!writer->Write(resp)) {
      loop_.Cancel(id);
      return grpc::Status(grpc::StatusCode::CANCELLED, "the router went away");
    }
    if (finished) return grpc::Status::OK;
  }
}

}  // namespace tandem
