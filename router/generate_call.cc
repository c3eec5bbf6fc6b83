#include "router/generate_call.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/request/request_validation.h"
#include "common/rpc/proto_convert.h"
#include "common/rpc/status_convert.h"
#include "common/tokenizer/byte_level.h"
#include "common/util/logging.h"
#include "router/router_instance.h"

namespace tandem::router {
namespace {

grpc::Status Grpc(const absl::Status& s) { return ToGrpcStatus(s); }

uint64_t RandomSeed() {
  static thread_local std::mt19937_64 gen(std::random_device{}());
  return gen();
}

// A reservation outlives the prefill call that fills it by this much: the
// call's deadline is the lease's end less this, so a transfer never writes
// into blocks whose lease ran out and were handed to another request.
constexpr absl::Duration kLeaseSlack = absl::Seconds(1);

// Transfer ids are "<request id>@<router>.<n>": unique per router process,
// and across routers by the random part, whatever ids clients send.
std::string NextTransferId(const std::string& request_id) {
  static std::atomic<uint64_t> next{0};
  return absl::StrCat(request_id, "@", RouterInstanceId(), ".", next.fetch_add(1));
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    default: return "INTERNAL";
  }
}

}  // namespace

namespace {

// The one thread that polls every live DownstreamCanceller. A canceller is
// registered for its whole life; Remove returns only when no Poll of it is
// running, so the canceller may be destroyed right after.
class CancelWatcher {
 public:
  static CancelWatcher& Get() {
    static CancelWatcher* w = new CancelWatcher();  // never destroyed: requests may outlive main's statics
    return *w;
  }
  void Add(DownstreamCanceller* c) {
    std::lock_guard<std::mutex> lock(mu_);
    live_.insert(c);
  }
  void Remove(DownstreamCanceller* c) {
    std::lock_guard<std::mutex> lock(mu_);  // the poll loop holds mu_ while it polls
    live_.erase(c);
  }

 private:
  CancelWatcher() {
    std::thread([this] {
      for (;;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        std::lock_guard<std::mutex> lock(mu_);
        for (DownstreamCanceller* c : live_) c->Poll();
      }
    }).detach();
  }
  std::mutex mu_;
  absl::flat_hash_set<DownstreamCanceller*> live_;
};

}  // namespace

DownstreamCanceller::DownstreamCanceller(const GenerateSink* client) : client_(client) {
  CancelWatcher::Get().Add(this);
}

DownstreamCanceller::~DownstreamCanceller() { CancelWatcher::Get().Remove(this); }

void DownstreamCanceller::Poll() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!gone_ && client_->IsCancelled()) {
    gone_ = true;
    if (active_ != nullptr) active_->TryCancel();
  }
}

void DownstreamCanceller::Attach(grpc::ClientContext* client) {
  std::lock_guard<std::mutex> lock(mu_);
  active_ = client;
  if (gone_) client->TryCancel();
}

void DownstreamCanceller::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  active_ = nullptr;
}

bool DownstreamCanceller::client_gone() const {
  std::lock_guard<std::mutex> lock(mu_);
  return gone_ || client_->IsCancelled();
}

GenerateCall::GenerateCall(RouterContext& router, GenerateSink& sink, const v1::GenerateRequest& req,
                           absl::Time arrival)
    : router_(router), sink_(sink), req_(req), canceller_(&sink), arrival_(arrival) {}

absl::Status GenerateCall::Prepare() {
  // The edge: sizes first, before anything is tokenized or forwarded.
  if (absl::Status s = ValidateRequestId(req_.request_id()); !s.ok()) return s;
  if (absl::Status s = ValidateCacheSalt(req_.cache_salt()); !s.ok()) return s;
  cache_salt_ = EffectiveCacheSalt(sink_.api_token(), req_.cache_salt());
  request_id_ = req_.request_id().empty() ? absl::StrCat("req-", router_.next_request.fetch_add(1))
                                          : req_.request_id();
  client_deadline_ = sink_.deadline();
  const ModelConfig& m = router_.model;
  switch (req_.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (absl::Status s = ValidatePromptText(req_.text()); !s.ok()) return s;
      prompt_ = router_.tokenizer->Encode(req_.text(), req_.has_add_special_tokens() ? req_.add_special_tokens() : true);
      break;
    case v1::GenerateRequest::kTokenIds:
      prompt_.assign(req_.token_ids().ids().begin(), req_.token_ids().ids().end());
      break;
    default:
      return absl::InvalidArgumentError("the request has no prompt (set text or token_ids)");
  }
  if (absl::Status s = ValidatePromptTokens(prompt_, m); !s.ok()) return s;
  sampling_ = FromProto(req_.sampling(), req_.has_logprobs() ? std::optional<int32_t>(req_.logprobs()) : std::nullopt);
  stopping_ = FromProto(req_.stopping());
  if (absl::Status s = ValidateGenerationParams(sampling_, stopping_, m.vocab_size); !s.ok()) return s;
  // The context is a hard end, as in the single-process generator.
  if (m.max_position_embeddings > 0) {
    stopping_.max_new_tokens = static_cast<int32_t>(
        std::min<int64_t>(stopping_.max_new_tokens, m.max_position_embeddings - static_cast<int64_t>(prompt_.size())));
    stopping_.min_new_tokens = std::min(stopping_.min_new_tokens, stopping_.max_new_tokens);
  }
  seed_ = sampling_.seed.value_or(RandomSeed());
  sampling_.seed = seed_;
  return_text_ = req_.has_return_text() ? req_.return_text() : true;
  detokenizer_.emplace(*router_.tokenizer, prompt_, req_.skip_special_tokens());
  stop_.emplace(stopping_, router_.eos_ids);
  return absl::OkStatus();
}

absl::Time GenerateCall::CallDeadline(absl::Time bound) const {
  return std::min({client_deadline_, absl::Now() + absl::Seconds(router_.config.worker_timeout_seconds), bound});
}

bool GenerateCall::WorkerReachable(const WorkerView& w) const {
  grpc::ClientContext c;
  c.set_deadline(absl::ToChronoTime(absl::Now() + absl::Milliseconds(500)));
  v1::GetLoadRequest r;
  v1::LoadReport load;
  grpc::Status s = w.decode_stub != nullptr ? w.decode_stub->GetLoad(&c, r, &load)
                                            : w.prefill_stub->GetLoad(&c, r, &load);
  // Slow is not gone: only a refused or broken connection is evidence.
  return s.error_code() != grpc::StatusCode::UNAVAILABLE;
}

grpc::Status GenerateCall::WorkerFailure(const WorkerView& w, const std::string& what, const grpc::Status& s) {
  TANDEM_LOG(WARNING) << "request " << request_id_ << ": " << what << " on " << w.id << " (" << w.address
                      << ") failed: " << CodeName(s.error_code()) << ": " << s.error_message();
  if (canceller_.client_gone() || absl::Now() >= client_deadline_) {
    if (absl::Now() >= client_deadline_) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed");
    }
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
  }
  switch (s.error_code()) {
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      // The server's cap (--worker_timeout_seconds or the reservation's
      // lease) ended the call before the client's deadline did.
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          absl::StrCat(what, " took longer than the router allows a worker call"));
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, absl::StrCat(what, ": the worker is out of capacity"));
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED:  // the worker ended it (draining, shutting down), not the client
      if (!WorkerReachable(w)) {
        router_.registry->Remove(w.id, absl::StrCat("unreachable after ", what, " failed: ", s.error_message()));
      }
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, absl::StrCat(what, " failed; the request may be retried"));
    default:
      return grpc::Status(s.error_code(), absl::StrCat(what, " failed (", CodeName(s.error_code()), ")"));
  }
}

absl::StatusOr<GenerateCall::Placement> GenerateCall::Reserve() {
  v1::ReserveKvRequest r;
  r.set_request_id(request_id_);
  r.set_prompt_tokens(static_cast<int32_t>(prompt_.size()));
  r.set_max_new_tokens(stopping_.max_new_tokens);
  r.set_priority(req_.priority());
  // The decode worker starts the reservation from its cached prefix of the
  // prompt under this salt; only the rest is transferred.
  *r.mutable_prompt_token_ids() = {prompt_.begin(), prompt_.end()};
  r.set_cache_salt(cache_salt_);
  // The lease: the time the prefill call may take (client's remaining
  // budget, capped) plus slack, but never more than the configured TTL;
  // Run bounds the prefill call by the lease's end less the slack.
  const absl::Duration budget = CallDeadline() - absl::Now();
  const absl::Duration ttl =
      std::min(std::max(budget, absl::ZeroDuration()) + kLeaseSlack, absl::Seconds(router_.config.kv_reservation_ttl_seconds));
  r.set_ttl_seconds(absl::ToDoubleSeconds(ttl));
  // Freed by the decode worker as soon as it stops reporting to this
  // instance (this router died or was replaced), not only at the lease's end.
  r.set_router_instance(RouterInstanceId());
  absl::Status last = absl::UnavailableError("no decode worker is available");
  // The reservation covers the prompt and the first token's slot; the
  // decode worker grows it as the answer does.
  int32_t block_size = 16;
  for (const WorkerView& w : router_.registry->Snapshot()) {
    if (w.role == v1::WORKER_ROLE_DECODE) block_size = std::max(1, w.info.kv_layout().block_size());
  }
  const int64_t blocks = (static_cast<int64_t>(prompt_.size()) + 1 + block_size - 1) / block_size;
  // A worker's report can be stale: when the chosen one has no room after
  // all, the next-best (another worker) gets one try.
  std::vector<std::string> refused;
  for (int attempt = 0; attempt < 2; ++attempt) {
    absl::StatusOr<WorkerView> w = router_.placement->PickDecode(prompt_keys_, blocks, refused);
    if (!w.ok()) return attempt == 0 ? w.status() : last;
    // A fresh id per attempt: a late reservation of the first attempt must
    // not collide with the second's.
    transfer_id_ = NextTransferId(request_id_);
    r.set_transfer_id(transfer_id_);
    grpc::ClientContext c;
    c.set_deadline(absl::ToChronoTime(CallDeadline()));
    canceller_.Attach(&c);
    Placement p;
    // Before the call, so an estimate no later than the worker's own.
    p.prefill_by = absl::Now() + ttl - kLeaseSlack;
    grpc::Status s = w->decode_stub->ReserveKv(&c, r, &p.reservation);
    canceller_.Detach();
    router_.registry->Done(w->id, blocks);
    if (s.ok() && p.reservation.transfer_id() != transfer_id_) {
      // A worker that predates router-chosen ids: its own id is the one to release.
      transfer_id_ = p.reservation.transfer_id();
    }
    if (s.ok()) {
      p.decode = *w;
      return p;
    }
    // The worker may have reserved after our call ended (its deadline
    // passed in flight): free it now rather than at the lease's end.
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED || s.error_code() == grpc::StatusCode::CANCELLED ||
        s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      Release(*w, transfer_id_);
    }
    grpc::Status failure = WorkerFailure(*w, "KV reservation", s);
    last = FromGrpcStatus(failure);
    if (s.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED && s.error_code() != grpc::StatusCode::UNAVAILABLE) {
      return last;
    }
    if (canceller_.client_gone()) return last;
    refused.push_back(w->id);
  }
  return last;
}

void GenerateCall::Release(const WorkerView& decode, const std::string& transfer_id) {
  // Not bounded by the client's deadline: freeing is the router's duty
  // whether or not the client still waits.
  grpc::ClientContext c;
  c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ReleaseKvRequest r;
  r.set_transfer_id(transfer_id);
  v1::ReleaseKvResponse resp;
  grpc::Status s = decode.decode_stub->ReleaseKv(&c, r, &resp);
  if (!s.ok()) {
    // The lease frees it on its own.
    TANDEM_LOG(WARNING) << "ReleaseKv " << transfer_id << " on " << decode.address << " failed: " << s.error_message();
  }
}

bool GenerateCall::AddToken(const v1::GeneratedToken& token, v1::GenerateResponse* resp) {
  ++completion_tokens_;
  const absl::Time now = absl::Now();
  if (completion_tokens_ == 1) {
    first_token_time_ = now;
  } else {
    router_.metrics->inter_token_latency->Observe(absl::ToDoubleSeconds(now - last_token_time_));
  }
  last_token_time_ = now;
  last_decision_ = stop_->OnToken(token.id(), detokenizer_->Push(token.id()));
  v1::GeneratedToken* out = resp->add_tokens();
  *out = token;
  out->set_special(router_.tokenizer->IsSpecial(token.id()));
  if (return_text_) out->set_text(last_decision_.text);
  if (return_text_) {
    for (v1::TokenLogprob& alt : *out->mutable_top_logprobs()) {
      const int32_t id = alt.token_id();
      alt.set_text(SanitizeUtf8(router_.tokenizer->Decode(std::span<const int32_t>(&id, 1), false)));
    }
  }
  return last_decision_.finished;
}

void GenerateCall::Finish(v1::GenerateResponse* resp) {
  const absl::Time end = absl::Now();
  end_time_ = end;
  resp->set_finish_reason(ToProto(last_decision_.reason));
  resp->set_matched_stop(last_decision_.matched_stop);
  if (return_text_ && last_decision_.matched_stop.empty()) {
    resp->set_text_tail(stop_->Flush() + detokenizer_->Flush());
  }
  resp->mutable_usage()->set_prompt_tokens(static_cast<int32_t>(prompt_.size()));
  resp->mutable_usage()->set_completion_tokens(completion_tokens_);
  v1::Timing* t = resp->mutable_timing();
  t->set_queue_seconds(queue_seconds_);
  t->set_prefill_seconds(prefill_seconds_);
  t->set_transfer_seconds(transfer_seconds_);
  t->set_ttft_seconds(absl::ToDoubleSeconds(first_token_time_ - arrival_));
  t->set_decode_seconds(absl::ToDoubleSeconds(end - first_token_time_));
  t->set_e2e_seconds(absl::ToDoubleSeconds(end - arrival_));
  t->set_tpot_seconds(completion_tokens_ > 1 ? t->decode_seconds() / (completion_tokens_ - 1) : 0.0);
  resp->set_prefill_worker(prefill_worker_);
  resp->set_decode_worker(decode_worker_);
}

namespace {

std::string OutcomeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "ok";
    case grpc::StatusCode::CANCELLED: return "cancelled";
    case grpc::StatusCode::INVALID_ARGUMENT: return "invalid_argument";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "deadline_exceeded";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "resource_exhausted";
    case grpc::StatusCode::FAILED_PRECONDITION: return "failed_precondition";
    case grpc::StatusCode::UNAVAILABLE: return "unavailable";
    case grpc::StatusCode::NOT_FOUND: return "not_found";
    default: return "internal";
  }
}

}  // namespace

void GenerateCall::RecordOutcome(const grpc::Status& status) {
  RouterMetrics& m = *router_.metrics;
  const bool done = status.ok() && last_decision_.finished;
  m.Requests(OutcomeName(status.error_code()), done ? std::string(FinishReasonName(last_decision_.reason)) : "none")
      .Increment();
  if (!done) return;
  const double ttft = absl::ToDoubleSeconds(first_token_time_ - arrival_);
  const double e2e = absl::ToDoubleSeconds(end_time_ - arrival_);
  m.ttft->Observe(ttft);
  m.e2e_latency->Observe(e2e);
  m.queue_time->Observe(std::max(0.0, queue_seconds_));
  m.prefill_time->Observe(prefill_seconds_);
  m.kv_transfer_time->Observe(transfer_seconds_);
  m.prompt_tokens->Increment(static_cast<double>(prompt_.size()));
  m.generation_tokens->Increment(completion_tokens_);
  // Objectives: the request's own hints, else the router's defaults. A
  // one-token answer has no TPOT and meets that objective trivially.
  const double ttft_target = req_.slo().has_ttft_seconds() ? req_.slo().ttft_seconds() : router_.config.slo_ttft_seconds;
  const double tpot_target = req_.slo().has_tpot_seconds() ? req_.slo().tpot_seconds() : router_.config.slo_tpot_seconds;
  const double tpot = completion_tokens_ > 1
                          ? absl::ToDoubleSeconds(last_token_time_ - first_token_time_) / (completion_tokens_ - 1)
                          : 0.0;
  if (completion_tokens_ > 1) m.tpot->Observe(tpot);
  if (router_.placement_metrics != nullptr) router_.placement_metrics->RecordTtft(ttft, predicted_hit_tokens_ > 0);
  const bool ttft_ok = ttft <= ttft_target, tpot_ok = tpot <= tpot_target;
  m.Slo("ttft", ttft_ok).Increment();
  m.Slo("tpot", tpot_ok).Increment();
  m.Slo("all", ttft_ok && tpot_ok).Increment();
}

grpc::Status GenerateCall::Run() {
  if (absl::Status s = Prepare(); !s.ok()) return Grpc(s);
  if (absl::Now() >= client_deadline_) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the request's deadline passed");
  }

  absl::StatusOr<std::optional<WorkerView>> local = PlaceLocal();
  if (!local.ok()) return Grpc(local.status());
  if (local->has_value()) return RunLocal(**local);

  absl::StatusOr<Placement> placement = Reserve();
  if (!placement.ok()) return Grpc(placement.status());
  decode_worker_ = placement->decode.address;

  // Prefill, with the first token back at once.
  absl::StatusOr<WorkerView> prefill =
      router_.placement->PickPrefill(prompt_keys_, static_cast<int64_t>(prompt_.size()));
  if (!prefill.ok()) {
    Release(*placement);
    return Grpc(prefill.status());
  }
  RecordPlaced(prefill->cached_prefix_blocks);
  prefill_worker_ = prefill->address;
  v1::PrefillRequest pr;
  pr.set_request_id(request_id_);
  *pr.mutable_prompt_token_ids() = {prompt_.begin(), prompt_.end()};
  *pr.mutable_sampling() = ToProto(sampling_);
  if (sampling_.logprobs >= 0) pr.set_logprobs(sampling_.logprobs);
  pr.set_seed(seed_);
  pr.set_priority(req_.priority());
  pr.set_decode_worker(placement->decode.address);
  pr.set_cache_salt(cache_salt_);
  *pr.mutable_destination() = placement->reservation;
  v1::PrefillResponse presp;
  grpc::Status ps;
  {
    grpc::ClientContext c;
    c.set_deadline(absl::ToChronoTime(CallDeadline(placement->prefill_by)));
    canceller_.Attach(&c);
    ps = prefill->prefill_stub->Prefill(&c, pr, &presp);
    canceller_.Detach();
  }
  router_.registry->Done(prefill->id, static_cast<int64_t>(prompt_.size()));
  if (!ps.ok()) {
    // The prefill worker stops sending once its deadline passed, and
    // aborts only this transfer; the blocks go back to the pool now.
    Release(*placement);
    return WorkerFailure(*prefill, "prefill", ps);
  }
  queue_seconds_ = absl::ToDoubleSeconds(absl::Now() - arrival_) - presp.prefill_seconds() - presp.transfer_seconds();
  prefill_seconds_ = presp.prefill_seconds();
  transfer_seconds_ = presp.transfer_seconds();

  v1::GenerateResponse first;
  first.set_request_id(request_id_);
  first.set_prefill_worker(prefill_worker_);
  first.set_decode_worker(decode_worker_);
  if (AddToken(presp.first_token(), &first)) {
    Release(*placement);
    Finish(&first);
    sink_.Write(first);
    return grpc::Status::OK;
  }
  if (!sink_.Write(first)) {
    Release(*placement);
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }

  // Decode: relay the worker's tokens through this request's text state.
  v1::DecodeRequest dr;
  dr.set_request_id(request_id_);
  dr.set_transfer_id(placement->reservation.transfer_id());
  *dr.mutable_prompt_token_ids() = {prompt_.begin(), prompt_.end()};
  *dr.mutable_first_token() = presp.first_token();
  *dr.mutable_sampling() = ToProto(sampling_);
  *dr.mutable_stopping() = ToProto(stopping_);
  if (sampling_.logprobs >= 0) dr.set_logprobs(sampling_.logprobs);
  dr.set_skip_special_tokens(req_.skip_special_tokens());
  dr.set_priority(req_.priority());
  dr.set_seed(seed_);
  dr.set_cache_salt(cache_salt_);
  dr.set_kv_completion(presp.kv_completion());
  return Relay(placement->decode, dr, [&] { Release(*placement); });
}

void GenerateCall::RecordPlaced(int32_t cached_blocks) {
  // A worker always computes the prompt's last token (its logits give the
  // first output token): at most the full blocks before it are hits.
  const int64_t most = (static_cast<int64_t>(prompt_.size()) - 1) / block_size_ * block_size_;
  predicted_hit_tokens_ = std::min<int64_t>(int64_t{cached_blocks} * block_size_, most);
  if (router_.placement_metrics != nullptr) {
    router_.placement_metrics->RecordRouted(static_cast<int64_t>(prompt_.size()), predicted_hit_tokens_);
  }
}

absl::StatusOr<std::optional<WorkerView>> GenerateCall::PlaceLocal() {
  WorkerRegistry& reg = *router_.registry;
  const bool aggregated = reg.CountLive(v1::WORKER_ROLE_AGGREGATED) > 0;
  const bool decode = reg.CountLive(v1::WORKER_ROLE_DECODE) > 0;
  const bool prefill = reg.CountLive(v1::WORKER_ROLE_PREFILL) > 0;
  int32_t block_size = 16;
  for (const WorkerView& w : reg.Snapshot()) {
    if (w.role != v1::WORKER_ROLE_PREFILL) block_size = std::max(1, w.info.kv_layout().block_size());
  }
  // The prompt and its first token; the worker grows it as it decodes.
  local_blocks_ = (static_cast<int64_t>(prompt_.size()) + block_size) / block_size;
  // Keys under the request's cache salt, as the workers compute them.
  block_size_ = block_size;
  prompt_keys_ = HashFullBlocks(prompt_, block_size, cache_salt_);
  PlacementPolicy& policy = *router_.placement;
  const bool pairs = decode && prefill;
  if (aggregated && (!pairs || reg.Headroom(v1::WORKER_ROLE_AGGREGATED) >= reg.Headroom(v1::WORKER_ROLE_DECODE))) {
    absl::StatusOr<WorkerView> w = policy.PickDecode(prompt_keys_, local_blocks_, {}, v1::WORKER_ROLE_AGGREGATED);
    if (w.ok()) RecordPlaced(w->cached_prefix_blocks);
    if (w.ok()) return std::optional<WorkerView>(*w);
    if (!pairs && !decode) return w.status();
  }
  // Conditional disaggregation counts only what is left to compute: a
  // decode worker holding all but a short suffix computes that itself.
  // (Looked up only when it can matter: the lookup copies the registry.)
  const bool local_prefill = decode && prefill && router_.config.local_prefill_max_tokens > 0 &&
                             static_cast<int64_t>(prompt_.size()) -
                                     int64_t{policy.BestCachedPrefix(prompt_keys_, v1::WORKER_ROLE_DECODE)} *
                                         block_size <
                                 router_.config.local_prefill_max_tokens;
  if (decode && (!prefill || local_prefill)) {
    absl::StatusOr<WorkerView> w = policy.PickDecode(prompt_keys_, local_blocks_);
    if (!w.ok()) return w.status();
    RecordPlaced(w->cached_prefix_blocks);
    return std::optional<WorkerView>(*w);
  }
  return std::optional<WorkerView>();
}

grpc::Status GenerateCall::RunLocal(const WorkerView& worker) {
  // One worker computes the prompt and decodes: no reservation, no
  // transfer, and the stream's first token is the prompt's.
  decode_worker_ = worker.address;
  prefill_worker_ = worker.address;
  v1::DecodeRequest dr;
  dr.set_request_id(request_id_);
  dr.set_local_prefill(true);
  *dr.mutable_prompt_token_ids() = {prompt_.begin(), prompt_.end()};
  *dr.mutable_sampling() = ToProto(sampling_);
  *dr.mutable_stopping() = ToProto(stopping_);
  if (sampling_.logprobs >= 0) dr.set_logprobs(sampling_.logprobs);
  dr.set_skip_special_tokens(req_.skip_special_tokens());
  dr.set_priority(req_.priority());
  dr.set_seed(seed_);
  dr.set_cache_salt(cache_salt_);
  const double ttft = req_.slo().has_ttft_seconds() ? req_.slo().ttft_seconds() : router_.config.slo_ttft_seconds;
  dr.set_ttft_budget_seconds(std::max(1e-3, ttft - absl::ToDoubleSeconds(absl::Now() - arrival_)));
  grpc::Status s = Relay(worker, dr, [] {});
  router_.registry->Done(worker.id, local_blocks_);
  return s;
}

grpc::Status GenerateCall::Relay(const WorkerView& worker, const v1::DecodeRequest& dr,
                                 const std::function<void()>& release) {
  grpc::ClientContext dc;
  dc.set_deadline(absl::ToChronoTime(CallDeadline()));
  canceller_.Attach(&dc);
  auto reader = worker.decode_stub->Decode(&dc, dr);
  v1::GenerateResponse in;
  bool finished = false;
  while (!finished && reader->Read(&in)) {
    v1::GenerateResponse out;
    out.set_request_id(request_id_);
    if (completion_tokens_ == 0) {
      out.set_prefill_worker(prefill_worker_);
      out.set_decode_worker(decode_worker_);
    }
    for (const v1::GeneratedToken& t : in.tokens()) {
      if (AddToken(t, &out)) {
        finished = true;
        break;
      }
    }
    if (!finished && in.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      // The worker's token-level rules ended it; the router's agree unless
      // the context ran out first.
      finished = true;
      if (!last_decision_.finished) {
        last_decision_.finished = true;
        last_decision_.reason = FinishReason::kLength;
      }
    }
    if (finished) Finish(&out);
    if (!sink_.Write(out)) {
      dc.TryCancel();
      canceller_.Detach();
      reader->Finish();
      release();
      return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
  }
  if (finished) dc.TryCancel();  // a stop string: the worker may still be generating
  grpc::Status ds = reader->Finish();
  canceller_.Detach();
  if (finished) return grpc::Status::OK;
  // Decode claims the reservation before its first token; one that failed
  // earlier (or never arrived) left it reserved. Releasing a claimed one is
  // a no-op.
  release();
  if (ds.ok()) {
    TANDEM_LOG(WARNING) << "request " << request_id_ << ": decode worker " << decode_worker_
                        << " ended the stream without a finish reason";
    return grpc::Status(grpc::StatusCode::INTERNAL, "decode ended the stream without a finish reason");
  }
  return WorkerFailure(worker, "decode", ds);
}

}  // namespace tandem::router
