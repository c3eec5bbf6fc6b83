// The decode side of the KV write hold tests (decode_worker/
// kv_write_holds_test, prefill_worker/kv_write_hold_test): a DecodeService
// with only its HoldKvWrite method, served by the decode worker's own
// KvWriteHolds over real gRPC on loopback against real KvReservations, and
// a fixture that starts, stops and polls it.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/kv/block_allocator.h"
#include "decode_worker/kv_reservations.h"
#include "decode_worker/kv_write_holds.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem::testing {

class HoldOnlyService final : public v1::DecodeService::Service {
 public:
  explicit HoldOnlyService(KvWriteHolds& holds) : holds_(holds) {}
  grpc::Status HoldKvWrite(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::KvWriteHoldResponse, v1::KvWriteHoldRequest>* stream) override {
    return holds_.Serve(ctx, stream);
  }

 private:
  KvWriteHolds& holds_;
};

// Serves `service` on a free loopback port; *stub dials it. Null when the
// server did not start.
inline std::unique_ptr<grpc::Server> ServeOnLoopback(grpc::Service& service,
                                                     std::unique_ptr<v1::DecodeService::Stub>* stub) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) return nullptr;
  *stub = v1::DecodeService::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  return server;
}

inline void StopLoopbackServer(grpc::Server& server) {
  server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

// A pool of kBlocks blocks, its reservations and the hold server over them.
class HoldServerTest : public ::testing::Test {
 protected:
  static constexpr int32_t kBlocks = 8;

  void SetUp() override { StartServer(KvWriteHolds::kDefaultMaxHold); }

  void StartServer(absl::Duration max_hold) {
    StopServer();
    holds_ = std::make_unique<KvWriteHolds>(reservations_, max_hold);
    service_ = std::make_unique<HoldOnlyService>(*holds_);
    server_ = ServeOnLoopback(*service_, &stub_);
    ASSERT_NE(server_, nullptr);
  }

  void StopServer() {
    if (server_ != nullptr) StopLoopbackServer(*server_);
    server_.reset();
    service_.reset();
    holds_.reset();
  }

  // Polls the reservations (locked; the allocator is not ours to read
  // while a handler thread may free into it) until `blocks` are held.
  bool ReservedBlocksReach(int64_t blocks, absl::Duration within) {
    const absl::Time give_up = absl::Now() + within;
    while (reservations_.reserved_blocks() != blocks) {
      if (absl::Now() >= give_up) return false;
      absl::SleepFor(absl::Milliseconds(2));
    }
    return true;
  }

  absl::Time Soon() { return absl::Now() + absl::Seconds(5); }
  absl::Time Later() { return absl::Now() + absl::Seconds(30); }

  BlockAllocator allocator_{kBlocks};
  KvReservations reservations_{allocator_};
  std::unique_ptr<KvWriteHolds> holds_;
  std::unique_ptr<HoldOnlyService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::DecodeService::Stub> stub_;
};

}  // namespace tandem::testing
