// Scripted decode and prefill workers for router tests: real gRPC servers
// on 127.0.0.1 that answer from a script and record what the router asked,
// including whether a call's context was cancelled and its deadline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/rpc/grpc_server.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem::testing {

using Clock = std::chrono::system_clock;

// A worker's registration as the fakes' router tests expect it: model "m",
// fingerprint "fp", a 2-layer float32 KV layout of 16-token blocks and
// `blocks` KV blocks.
v1::WorkerInfo FakeWorkerInfo(const std::string& address, v1::WorkerRole role, int64_t blocks);

struct DecodeScript {
  grpc::Status reserve_status = grpc::Status::OK;
  // Streamed by Decode, one token per message.
  std::vector<int32_t> tokens;
  // The last token's message carries FINISH_REASON_LENGTH.
  bool finish_after_tokens = true;
  // After the tokens, wait until the call is cancelled (a worker that would
  // go on generating) instead of returning.
  bool hang_after_tokens = false;
  // Decode waits for Go() before streaming.
  bool wait_for_go = false;
};

class FakeDecodeWorker final : public v1::DecodeService::Service {
 public:
  explicit FakeDecodeWorker(DecodeScript script);
  ~FakeDecodeWorker() override;
  const std::string& address() const { return server_->address(); }
  // Stops the server at once: in-flight calls are cut off (a dying worker).
  void Kill() { server_->Shutdown(absl::ZeroDuration()); }

  grpc::Status ReserveKv(grpc::ServerContext* ctx, const v1::ReserveKvRequest* req,
                         v1::ReserveKvResponse* resp) override;
  grpc::Status ReleaseKv(grpc::ServerContext* ctx, const v1::ReleaseKvRequest* req,
                         v1::ReleaseKvResponse* resp) override;
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::GenerateResponse>* writer) override;

  void Go();
  // True when `pred` held within `timeout`; `pred` runs under the lock.
  bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Recorded calls; read under WaitFor or after the router call ended.
  std::vector<v1::ReserveKvRequest> reserves;
  std::vector<std::string> issued_transfer_ids;
  std::vector<std::string> released_transfer_ids;
  std::vector<v1::DecodeRequest> decodes;
  bool decode_cancelled = false;
  Clock::time_point reserve_deadline{};
  Clock::time_point decode_deadline{};

 private:
  DecodeScript script_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool go_ = false;
  std::unique_ptr<GrpcServer> server_;
};

struct PrefillScript {
  grpc::Status status = grpc::Status::OK;
  int32_t first_token = 0;
  // Prefill waits until the call is cancelled, then fails.
  bool hang = false;
  std::string kv_completion;  // PrefillResponse.kv_completion
};

class FakePrefillWorker final : public v1::PrefillService::Service {
 public:
  explicit FakePrefillWorker(PrefillScript script);
  ~FakePrefillWorker() override;
  const std::string& address() const { return server_->address(); }

  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req, v1::PrefillResponse* resp) override;
  bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = std::chrono::seconds(5));

  std::vector<v1::PrefillRequest> prefills;
  bool cancelled = false;
  Clock::time_point deadline{};

 private:
  PrefillScript script_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::unique_ptr<GrpcServer> server_;
};

}  // namespace tandem::testing
