// tandem-bench over an OpenAI-compatible HTTP API (tandem's router or any
// other server): streaming POST {base}/completions with the prompt as
// token ids, timed the way vLLM's benchmark does it: TTFT at the first
// chunk that carries output, then one arrival per chunk; the usage chunk
// (stream_options.include_usage) gives the token count, and tokens beyond
// the chunks (a server that sends several per chunk) arrive with the last.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "bench/tandem_bench/bench_client.h"

namespace tandem::bench {

// What GET {base}/models says of the served model.
struct OpenAiModel {
  std::string id;
  int64_t max_model_len = 0;  // 0: not said
  int64_t vocab_size = 0;     // tandem's extension; 0: not said
};

class OpenAiBenchClient final : public BenchClient {
 public:
  // `endpoint`: "http://HOST:PORT/v1" (https too, verified against
  // `ca_file`'s PEM roots when given, else the system's). INVALID_ARGUMENT
  // when it is not such a URL.
  static absl::StatusOr<std::unique_ptr<OpenAiBenchClient>> Create(const std::string& endpoint,
                                                                    const std::string& api_key,
                                                                    const std::string& ca_file = "");
  // The first model GET /models lists; UNAVAILABLE when the server cannot
  // be reached or lists none.
  absl::StatusOr<OpenAiModel> Model() const;
  void set_model(std::string model) { model_ = std::move(model); }
  void Generate(std::span<const int32_t> prompt, int32_t output_tokens, double deadline_seconds,
                RequestRecord& rec) override;

 private:
  OpenAiBenchClient() = default;
  std::string scheme_host_port_;  // "http://127.0.0.1:8080"
  std::string base_path_;         // "/v1"
  std::string api_key_;
  std::string ca_file_;
  std::string model_;
};

}  // namespace tandem::bench
