// tandem-bench over the router's OpenAI-compatible HTTP API (--endpoint)
// against a real local cluster: every request completes with the token
// counts asked for, the router counts the same requests and tokens, the
// results carry vLLM's benchmark field names, and no KV block is left.
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/default_model/default_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

std::string RunCommand(const std::string& cmd, int* code) {
  FILE* f = popen(cmd.c_str(), "r");
  std::string printed;
  if (f == nullptr) return printed;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) printed.append(buf, n);
  *code = pclose(f);
  return printed;
}

TEST(BenchHttpTest, EndpointRunCountsWhatTheRouterServed) {
  testing::TempDir model, logs, out;
  ASSERT_TRUE(WriteDefaultModel(model.str()).ok());
  LocalClusterOptions o;
  o.security = testing::TestSecurity();
  o.model_dir = model.str();
  o.bin_dir = testing::BinDir();
  o.log_dir = logs.str();
  o.num_prefill = 0;
  o.num_decode = 0;
  o.num_aggregated = 1;
  o.aggregated_args = {"--num_threads=1"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();

  // TLS mode: HTTPS verified against the cluster CA, with the api token.
  const SecurityOptions& sec = o.security;
  const bool tls = !sec.tls_cert_file.empty();
  const std::string tls_flags =
      tls ? absl::StrCat(" --endpoint_ca=", sec.tls_client_ca_file, " --api_key=",
                          absl::StripAsciiWhitespace(testing::ReadFile(sec.api_token_file)))
          : "";
  constexpr int kRequests = 12, kOutput = 8;
  int code = -1;
  const std::string printed = RunCommand(
      absl::StrCat(testing::BinDir(), "/tandem-bench --endpoint=", tls ? "https://" : "http://",
                   (*cluster)->router_http_address(), "/v1", tls_flags, " --concurrency=4 --num_requests=", kRequests,
                   " --input_len=8:40 --output_len=", kOutput, " --warmup=0 --progress=false --out_dir=", out.str(), " 2>&1"),
      &code);
  ASSERT_EQ(code, 0) << printed;

  nlohmann::json result = nlohmann::json::parse(testing::ReadFile(out.str() + "/results.json"));
  EXPECT_EQ(result["model"], model.path().filename().string());  // the router names it by its directory
  ASSERT_EQ(result["runs"].size(), 1u);
  const nlohmann::json& run = result["runs"][0];
  EXPECT_EQ(run["failed"], 0);
  EXPECT_EQ(run["completed"], kRequests);
  EXPECT_EQ(run["total_output_tokens"], kRequests * kOutput);
  for (const char* field : {"request_throughput", "output_throughput", "total_token_throughput", "mean_ttft_ms",
                            "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
                            "mean_itl_ms", "p99_itl_ms", "mean_e2el_ms", "p99_e2el_ms"}) {
    ASSERT_TRUE(run.contains(field)) << field;
    EXPECT_GT(run[field].get<double>(), 0) << field;
  }
  EXPECT_LE(run["median_ttft_ms"].get<double>(), run["p99_ttft_ms"].get<double>());
  EXPECT_GE(run["mean_e2el_ms"].get<double>(), run["mean_ttft_ms"].get<double>());

  // The router served exactly these requests and tokens.
  auto metrics = testing::HttpGet((*cluster)->metrics_addresses()[0], "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(testing::SumMetric(*metrics, "tandem_requests_total", {"outcome=\"ok\""}), kRequests);
  EXPECT_EQ(testing::SumMetric(*metrics, "tandem_generation_tokens_total"), kRequests * kOutput);
  EXPECT_EQ(testing::SumMetric(*metrics, "tandem_prompt_tokens_total"), run["total_input_tokens"].get<double>());
  absl::Status no_leak = testing::WaitForNoUsedBlocks((*cluster)->aggregated_addresses(), {});
  EXPECT_TRUE(no_leak.ok()) << no_leak;
  EXPECT_TRUE((*cluster)->Stop().ok());
}

}  // namespace
}  // namespace tandem
