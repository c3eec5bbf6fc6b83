// tandem-bench against a real local cluster on the CPU: a sweep over four
// rates completes, writes results.json and the plots, and its request and
// token counts agree with the router's own metrics.
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

TEST(BenchSweepTest, FourRatesWriteJsonAndPlotsThatAgreeWithTheRouterMetrics) {
  if (testing::TestTlsMode()) GTEST_SKIP() << "tandem-bench dials the router in plaintext (no TLS flags yet)";
  testing::TempDir model, logs, out;
  ASSERT_TRUE(WriteTestModel(model.str()).ok());
  LocalClusterOptions o;
  o.security = testing::TestSecurity();  // TANDEM_TEST_TLS=1: mutual TLS and tokens
  o.model_dir = model.str();
  o.bin_dir = testing::BinDir();
  o.log_dir = logs.str();
  o.prefill_args = {"--num_threads=1"};
  o.decode_args = {"--num_threads=1"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();

  const std::string cmd = absl::StrCat(testing::BinDir(), "/tandem-bench --router=", (*cluster)->router_address(),
                                       " --rates=4,8,16,32 --num_requests=24 --input_len=8:48 --output_len=4:24",
                                       " --warmup=2 --slo_ttft=0.5 --slo_tpot=0.05 --out_dir=", out.str(), " 2>&1");
  FILE* f = popen(cmd.c_str(), "r");
  ASSERT_NE(f, nullptr);
  std::string printed;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) printed.append(buf, n);
  ASSERT_EQ(pclose(f), 0) << printed;
  EXPECT_NE(printed.find("goodput:"), std::string::npos) << printed;

  nlohmann::json result = nlohmann::json::parse(testing::ReadFile(out.str() + "/results.json"));
  ASSERT_EQ(result["runs"].size(), 4u);
  int64_t completed = 0, input = 0, output = 0;
  for (const auto& run : result["runs"]) {
    EXPECT_EQ(run["failed"], 0);
    completed += run["completed"].get<int64_t>();
    input += run["input_tokens"].get<int64_t>();
    output += run["output_tokens"].get<int64_t>();
    EXPECT_GT(run["request_throughput"].get<double>(), 0);
  }
  EXPECT_EQ(completed, 96);
  for (const char* plot : {"attainment_vs_rate.svg", "latency_vs_rate.svg", "ttft_cdf.svg", "tpot_cdf.svg"}) {
    EXPECT_GT(std::filesystem::file_size(out.path() / plot), 1000u) << plot;
  }

  // The router counted the same requests and tokens (plus the two warm-up
  // requests, which tandem-bench does not report).
  auto metrics = testing::HttpGet((*cluster)->metrics_addresses()[0], "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(testing::SumMetric(*metrics, "tandem_requests_total", {"outcome=\"ok\""}), completed + 2);
  const double router_output = testing::SumMetric(*metrics, "tandem_generation_tokens_total");
  const double router_input = testing::SumMetric(*metrics, "tandem_prompt_tokens_total");
  // The warm-up requests are the workload's first two.
  EXPECT_GT(router_output, output);
  EXPECT_LT(router_output, output + 2 * 24 + 1);
  EXPECT_GT(router_input, input);
  EXPECT_LT(router_input, input + 2 * 48 + 1);

  // compare: one plot from two result files.
  const std::string compare = absl::StrCat(testing::BinDir(), "/tandem-bench compare ", out.str(), "/results.json ",
                                           out.str(), "/results.json --names=a,b --out=", out.str(), "/cmp.svg 2>&1");
  EXPECT_EQ(std::system(compare.c_str()), 0);
  EXPECT_GT(std::filesystem::file_size(out.path() / "cmp.svg"), 1000u);
  // No KV block left in use on any worker once the load is over.
  absl::Status no_leak = testing::WaitForNoUsedBlocks((*cluster)->decode_addresses(), (*cluster)->prefill_addresses());
  EXPECT_TRUE(no_leak.ok()) << no_leak;
  EXPECT_TRUE((*cluster)->Stop().ok());
}

}  // namespace
}  // namespace tandem
