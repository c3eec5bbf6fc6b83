// How tandem-bench sends one request: over tandem's gRPC API or over an
// OpenAI-compatible HTTP API (openai_client.h). Either fills the record's
// token arrival times the same way, so the statistics do not care which.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "tandem/v1/generate.grpc.pb.h"

namespace tandem::bench {

struct RequestRecord;

class BenchClient {
 public:
  virtual ~BenchClient() = default;
  // Sends `prompt` for `output_tokens` greedy tokens (EOS ignored) and
  // fills `rec`'s ok/error, tokens (arrival of each, seconds after the
  // call) and output_ids (when the API returns ids). Called from many
  // threads at once.
  virtual void Generate(std::span<const int32_t> prompt, int32_t output_tokens, double deadline_seconds,
                        RequestRecord& rec) = 0;
};

// tandem's GenerationService.Generate, through `stub` (thread-safe; it
// outlives the client). Every request carries `cache_salt` (empty: none).
class GrpcBenchClient final : public BenchClient {
 public:
  explicit GrpcBenchClient(v1::GenerationService::Stub& stub, std::string cache_salt = "")
      : stub_(stub), cache_salt_(std::move(cache_salt)) {}
  void Generate(std::span<const int32_t> prompt, int32_t output_tokens, double deadline_seconds,
                RequestRecord& rec) override;

 private:
  v1::GenerationService::Stub& stub_;
  const std::string cache_salt_;
};

}  // namespace tandem::bench
