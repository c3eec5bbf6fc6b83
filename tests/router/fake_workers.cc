#include "tests/router/fake_workers.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace tandem::testing {

v1::WorkerInfo FakeWorkerInfo(const std::string& address, v1::WorkerRole role, int64_t blocks) {
  v1::WorkerInfo i;
  i.set_address(address);
  i.set_role(role);
  i.set_model_name("m");
  i.set_model_fingerprint("fp");
  i.mutable_kv_layout()->set_num_layers(2);
  i.mutable_kv_layout()->set_num_kv_heads(2);
  i.mutable_kv_layout()->set_head_dim(16);
  i.mutable_kv_layout()->set_block_size(16);
  i.mutable_kv_layout()->set_dtype("float32");
  i.set_kv_blocks_total(blocks);
  return i;
}
namespace {

std::unique_ptr<GrpcServer> StartOrDie(grpc::Service* service) {
  absl::StatusOr<std::unique_ptr<GrpcServer>> s = GrpcServer::Start("127.0.0.1:0", {service});
  if (!s.ok()) {
    fprintf(stderr, "fake worker failed to start: %s\n", s.status().ToString().c_str());
    std::abort();
  }
  return std::move(*s);
}

}  // namespace

FakeDecodeWorker::FakeDecodeWorker(DecodeScript script) : script_(std::move(script)) {
  server_ = StartOrDie(this);
}

FakeDecodeWorker::~FakeDecodeWorker() { server_->Shutdown(absl::ZeroDuration()); }

grpc::Status FakeDecodeWorker::ReserveKv(grpc::ServerContext* ctx, const v1::ReserveKvRequest* req,
                                         v1::ReserveKvResponse* resp) {
  std::lock_guard<std::mutex> lock(mu_);
  reserves.push_back(*req);
  reserve_deadline = ctx->deadline();
  cv_.notify_all();
  if (!script_.reserve_status.ok()) return script_.reserve_status;
  const std::string id = absl::StrCat("xfer-", reserves.size(), "-", req->request_id());
  issued_transfer_ids.push_back(id);
  resp->set_transfer_id(id);
  resp->add_block_ids(7);
  resp->mutable_pool()->set_worker_id("fake-decode");
  return grpc::Status::OK;
}

grpc::Status FakeDecodeWorker::ReleaseKv(grpc::ServerContext*, const v1::ReleaseKvRequest* req,
                                         v1::ReleaseKvResponse*) {
  std::lock_guard<std::mutex> lock(mu_);
  released_transfer_ids.push_back(req->transfer_id());
  cv_.notify_all();
  return grpc::Status::OK;
}

grpc::Status FakeDecodeWorker::Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
  std::unique_lock<std::mutex> lock(mu_);
  decodes.push_back(*req);
  decode_deadline = ctx->deadline();
  cv_.notify_all();
  if (script_.wait_for_go) {
    while (!go_ && !ctx->IsCancelled()) cv_.wait_for(lock, std::chrono::milliseconds(5));
  }
  for (size_t i = 0; i < script_.tokens.size() && !ctx->IsCancelled(); ++i) {
    v1::GenerateResponse r;
    r.set_request_id(req->request_id());
    v1::GeneratedToken* t = r.add_tokens();
    t->set_id(script_.tokens[i]);
    t->set_logprob(-0.5f);
    if (i + 1 == script_.tokens.size() && script_.finish_after_tokens && !script_.hang_after_tokens) {
      r.set_finish_reason(v1::FINISH_REASON_LENGTH);
    }
    lock.unlock();
    const bool written = writer->Write(r);
    lock.lock();
    if (!written) break;
  }
  if (script_.hang_after_tokens) {
    while (!ctx->IsCancelled()) cv_.wait_for(lock, std::chrono::milliseconds(5));
  }
  if (ctx->IsCancelled()) {
    decode_cancelled = true;
    cv_.notify_all();
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
  return grpc::Status::OK;
}

void FakeDecodeWorker::Go() {
  std::lock_guard<std::mutex> lock(mu_);
  go_ = true;
  cv_.notify_all();
}

bool FakeDecodeWorker::WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, pred);
}

FakePrefillWorker::FakePrefillWorker(PrefillScript script) : script_(std::move(script)) {
  server_ = StartOrDie(this);
}

FakePrefillWorker::~FakePrefillWorker() { server_->Shutdown(absl::ZeroDuration()); }

grpc::Status FakePrefillWorker::Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                                        v1::PrefillResponse* resp) {
  std::unique_lock<std::mutex> lock(mu_);
  prefills.push_back(*req);
  deadline = ctx->deadline();
  cv_.notify_all();
  if (script_.hang) {
    while (!ctx->IsCancelled()) cv_.wait_for(lock, std::chrono::milliseconds(5));
    cancelled = true;
    cv_.notify_all();
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
  if (!script_.status.ok()) return script_.status;
  resp->mutable_first_token()->set_id(script_.first_token);
  resp->mutable_first_token()->set_logprob(-0.25f);
  resp->set_prefill_seconds(0.01);
  resp->set_transfer_seconds(0.002);
  resp->set_kv_completion(script_.kv_completion);
  return grpc::Status::OK;
}

bool FakePrefillWorker::WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, pred);
}

}  // namespace tandem::testing
