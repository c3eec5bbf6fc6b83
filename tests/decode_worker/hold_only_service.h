// The DecodeService with only its HoldKvWrite method, served by the decode
// worker's own KvWriteHolds: the decode side of the KV write hold tests
// (decode_worker/kv_write_holds_test, prefill_worker/kv_write_hold_test).
#pragma once

#include "decode_worker/kv_write_holds.h"
#include "grpcpp/grpcpp.h"
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

}  // namespace tandem::testing
