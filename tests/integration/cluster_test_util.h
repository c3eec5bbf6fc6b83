// Helpers for integration tests that run real tandem processes: a gRPC
// client for the router, running `tandem generate` (the monolithic
// reference), and reading workers' own load reports.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls_credentials.h"
#include "grpcpp/channel.h"
#include "tandem/v1/generate.grpc.pb.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem::testing {

// The settings a test request uses, in both the router's proto and the
// CLI's flags.
struct RequestSpec {
  std::string prompt;
  float temperature = 0.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  int64_t seed = -1;
  int32_t max_new_tokens = 12;
  bool ignore_eos = true;
  std::vector<std::string> stop;
};

// A greedy request of `max_new_tokens` for `prompt`.
inline RequestSpec Greedy(std::string prompt, int32_t max_new_tokens) {
  RequestSpec s;
  s.prompt = std::move(prompt);
  s.max_new_tokens = max_new_tokens;
  return s;
}

struct StreamResult {
  std::vector<int32_t> tokens;
  std::string text;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  grpc::Status status;
  std::string decode_worker;
  std::string prefill_worker;
};

v1::GenerateRequest ToGenerateRequest(const RequestSpec& spec);

// Streams one request. `cancel_after_tokens` >= 0 cancels the call after
// that many tokens; `deadline` bounds the call.
StreamResult StreamGenerate(v1::GenerationService::Stub& stub, const v1::GenerateRequest& req,
                            int cancel_after_tokens = -1,
                            absl::Duration deadline = absl::InfiniteDuration());

// How many times longer a latency bound of the request path (blocks back
// after a kill, a cancel noticed) may take in this build: 3 under
// AddressSanitizer or ThreadSanitizer, whose processes run several times
// slower on CI's 2 cores (beside another sanitized cluster test), 1
// otherwise. The unsanitized pass holds the bounds as written.
constexpr int SanitizerTimeScale() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return 3;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  return 3;
#else
  return 1;
#endif
#else
  return 1;
#endif
}

// The bound for every KV block to be back after a request's
// failure (cancel, deadline, kill), stretched only in sanitizer builds.
constexpr absl::Duration kBlocksBackWithin = absl::Seconds(2 * SanitizerTimeScale());

// The router's public API with TestSecurity()'s credentials.
std::unique_ptr<v1::GenerationService::Stub> RouterStub(const std::string& address);

// TLS mode: with TANDEM_TEST_TLS=1 in the environment, every cluster test
// runs its processes with mutual TLS, a cluster token and an api token
// (certificates made once per test binary by make_test_certs.sh), and the
// helpers here dial with them; tests put TestSecurity() into their
// LocalClusterOptions. Otherwise it is plaintext (empty options).
bool TestTlsMode();
const SecurityOptions& TestSecurity();
// A channel for internal calls (GetLoad, health, raw worker RPCs) with
// TestSecurity()'s cluster credentials.
std::shared_ptr<grpc::Channel> ClusterChannel(const std::string& address);

// Runs `bin/tandem generate --output jsonl` with `spec`'s flags on every
// prompt and returns each prompt's token ids.
std::vector<std::vector<int32_t>> MonolithicTokens(const std::string& model_dir,
                                                   const RequestSpec& spec,
                                                   const std::vector<std::string>& prompts);

// The worker's own load report (DecodeService.GetLoad or
// PrefillService.GetLoad).
absl::StatusOr<v1::LoadReport> DecodeLoad(const std::string& address);
absl::StatusOr<v1::LoadReport> PrefillLoad(const std::string& address);

// Polls until every worker reports zero used KV blocks, or `timeout`.
absl::Status WaitForNoUsedBlocks(const std::vector<std::string>& decode,
                                 const std::vector<std::string>& prefill,
                                 absl::Duration timeout = absl::Seconds(10));

// GET http://<address><path>; the body, or an error.
absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path);
// Sum of a metric's samples in Prometheus text format whose line starts
// with `name` followed by "{" or " " and contains every `label` string.
double SumMetric(const std::string& text, const std::string& name, const std::vector<std::string>& labels = {});

std::string BinDir();
std::string ReadFile(const std::string& path);
// The last `lines` lines of every *.log in `log_dir` (a LocalCluster's),
// each under its name, for a failing test's output.
std::string LogTails(const std::string& log_dir, int lines = 40);

// The built-in default model written to `dir`, with `chat_template` in its
// tokenizer_config.json (the default model ships none).
absl::Status WriteDefaultModelWithChatTemplate(const std::string& dir, const std::string& chat_template);

}  // namespace tandem::testing
