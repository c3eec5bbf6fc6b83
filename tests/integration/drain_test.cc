// SIGTERM drains a worker: it finishes the requests it is running, takes no
// new ones (the router stops placing on it), and exits 0.
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

TEST(DrainTest, ADrainingDecodeWorkerFinishesItsRequestsAndExitsZero) {
  testing::TempDir model, logs;
  ASSERT_TRUE(WriteTestModel(model.str()).ok());
  LocalClusterOptions o;
  o.security = testing::TestSecurity();  // TANDEM_TEST_TLS=1: mutual TLS and tokens
  o.model_dir = model.str();
  o.num_decode = 2;
  o.bin_dir = testing::BinDir();
  o.log_dir = logs.str();
  o.decode_args = {"--num_threads=1"};
  o.prefill_args = {"--num_threads=1"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const std::string draining = (*cluster)->decode_addresses()[0];
  const std::string survivor = (*cluster)->decode_addresses()[1];
  auto stub = testing::RouterStub((*cluster)->router_address());

  // Long requests on both workers.
  std::vector<testing::StreamResult> running(6);
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      testing::RequestSpec s;
      s.prompt = absl::StrCat("a long story, part ", i);
      s.max_new_tokens = 400;
      running[i] = testing::StreamGenerate(*stub, testing::ToGenerateRequest(s));
    });
  }
  absl::SleepFor(absl::Milliseconds(300));
  int exit_code = -2;
  std::thread stopper([&] {
    auto code = (*cluster)->Terminate("decode0");
    exit_code = code.ok() ? *code : -3;
  });
  // While it drains, new requests go to the other worker.
  absl::SleepFor(absl::Milliseconds(100));
  for (int i = 0; i < 4; ++i) {
    testing::RequestSpec s;
    s.prompt = absl::StrCat("new request ", i);
    testing::StreamResult r = testing::StreamGenerate(*stub, testing::ToGenerateRequest(s));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.decode_worker, survivor);
  }
  for (auto& t : threads) t.join();
  stopper.join();
  int on_drained = 0;
  for (const auto& r : running) {
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.tokens.size(), 400u);
    on_drained += r.decode_worker == draining;
  }
  EXPECT_GT(on_drained, 0) << "no request ran on the drained worker; the test lost its point";
  if (::testing::Test::HasFailure()) std::printf("%s", testing::LogTails(logs.str()).c_str());
  EXPECT_EQ(exit_code, 0);
  EXPECT_TRUE(testing::WaitForNoUsedBlocks({survivor}, (*cluster)->prefill_addresses()).ok());
  EXPECT_TRUE((*cluster)->Stop().ok());
}

}  // namespace
}  // namespace tandem
