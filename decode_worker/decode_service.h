// The decode worker's gRPC face (DecodeService in worker.proto): KV
// reservations for incoming transfers, and the Decode stream that adopts a
// transferred prompt into the continuous batch and streams its tokens.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"

#include "common/engine/engine.h"
#include "common/transport/kv_transport.h"
#include "common/worker/fault_injector.h"
#include "decode_worker/decode_loop.h"
#include "decode_worker/kv_reservations.h"
#include "decode_worker/kv_write_holds.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

class DecodeServiceImpl final : public v1::DecodeService::Service {
 public:
  DecodeServiceImpl(const ModelConfig& config, const KvLayout& layout, KvReservations& reservations,
                    DecodeLoop& loop);
  // The descriptor ExportPool gave for this worker's KV pool; it goes out
  // with every reservation. Until it is set, reservations are refused.
  void SetPool(v1::KvPoolDescriptor pool);

  grpc::Status ReserveKv(grpc::ServerContext* ctx, const v1::ReserveKvRequest* req,
                         v1::ReserveKvResponse* resp) override;
  grpc::Status ReleaseKv(grpc::ServerContext* ctx, const v1::ReleaseKvRequest* req,
                         v1::ReleaseKvResponse* resp) override;
  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::GenerateResponse>* writer) override;

  grpc::Status GetLoad(grpc::ServerContext* ctx, const v1::GetLoadRequest* req,
                       v1::LoadReport* resp) override;
  // NCCL transport: validates the request against the reservation and
  // hands it to the transport, which posts the receives on its own thread
  // (and frees the reservation if they fail).
  grpc::Status StartNcclTransfer(grpc::ServerContext* ctx, const v1::NcclTransferRequest* req,
                                 v1::NcclTransferResponse* resp) override;
  // One-sided transports (UCX puts, CUDA IPC copies): the prefill worker's
  // pin on a reservation for as long as it may write (kv_write_holds.h).
  grpc::Status HoldKvWrite(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::KvWriteHoldResponse, v1::KvWriteHoldRequest>* stream) override;
  // Configured before serving (maximum, metrics).
  KvWriteHolds& write_holds() { return write_holds_; }

  // The transport the pool was exported with (set before serving). Decode
  // waits on it (WaitReceived) before adopting a transfer's blocks.
  void SetTransport(KvTransport* transport) { transport_.store(transport); }

  // The worker's load, as reported to the router (set before serving).
  void SetLoadReporter(std::function<v1::LoadReport()> load) { load_ = std::move(load); }

  // The worker's prefix cache (set before serving; null: caching off): a
  // reservation starts with the cached blocks of the prompt's longest
  // cached prefix, and only the rest is reserved and transferred.
  void SetPrefixCache(KvCacheManager* kv) { prefix_cache_ = kv; }
  // Draining: new reservations are refused, running streams finish.
  void SetDraining() { draining_ = true; }
  // Decode calls in progress, from their first line to their last: a
  // request counts here while it waits for its KV, between its claim and
  // the loop's admission, and while it streams. With the reservations
  // (which cover a request from ReserveKv to its claim inside Decode) this
  // is what a drain waits for; the loop's own stats lag admission by a step.
  int64_t open_decode_calls() const { return open_decode_calls_.load(); }

  // --fault_rpc_failure_rate: ReserveKv and Decode fail that fraction of
  // calls (set before serving; null: none).
  void SetFaultInjector(FaultInjector* faults) { faults_ = faults; }

 private:
  // Submits `job` to the loop and relays its events until it ends, the
  // caller goes away (the job is cancelled, its blocks freed) or fails.
  grpc::Status Stream(grpc::ServerContext* ctx, const std::string& request_id, DecodeJob job,
                      grpc::ServerWriter<v1::GenerateResponse>* writer);

  std::atomic<KvTransport*> transport_{nullptr};  // set once, after the server started
  const ModelConfig& config_;
  const KvLayout layout_;
  KvReservations& reservations_;
  DecodeLoop& loop_;
  absl::Mutex pool_mu_;
  std::optional<v1::KvPoolDescriptor> pool_ ABSL_GUARDED_BY(pool_mu_);
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> open_decode_calls_{0};
  std::function<v1::LoadReport()> load_;
  std::atomic<int64_t> next_transfer_{0};
  FaultInjector* faults_ = nullptr;
  KvCacheManager* prefix_cache_ = nullptr;
  // Last: its watchdog thread stops before the rest goes.
  KvWriteHolds write_holds_;
};

}  // namespace tandem
