// Cache-aware routing end to end, with real processes on loopback: four
// aggregated workers with prefix caches publish their block events to the
// router, whose placement sends each turn of a multi-turn conversation
// where its history is cached. The hit rate the workers count reaches 90%
// of the oracle's (every request on the worker holding its longest
// computed prefix, caches unbounded), well above round robin's; and a
// router restart rebuilds its index from the workers' full sets, so the
// next turn still finds its worker. Every test ends with no KV block held.
#include <algorithm>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/tandem_bench/load_runner.h"
#include "bench/tandem_bench/prefix_workloads.h"
#include "bench/tandem_bench/workload.h"
#include "common/default_model/default_model.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_logs_test.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

constexpr int kWorkers = 4;
constexpr int32_t kBlockSize = 16;  // the workers' default --block_size

// Prompt tokens the workers looked up in their prefix caches and found.
struct WorkerHits {
  double queried = 0, hit = 0;
  double rate() const { return queried > 0 ? hit / queried : 0.0; }
  WorkerHits operator-(const WorkerHits& o) const { return {queried - o.queried, hit - o.hit}; }
};

class PrefixRoutingTest : public testing::ClusterLogsTest {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    ASSERT_TRUE(WriteDefaultModel(model_dir_->str()).ok());
  }
  static void TearDownTestSuite() { delete model_dir_; }

  void StartCluster(const std::string& placement) {
    LocalClusterOptions o;
    o.num_prefill = 0;
    o.num_decode = 0;
    o.num_aggregated = kWorkers;
    o.model_dir = model_dir_->str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_.str();
    o.security = testing::TestSecurity();
    // Reports (and so block events) every 100 ms.
    o.router_args = {"--placement=" + placement, "--report_interval_seconds=0.1", "--liveness_timeout_seconds=3"};
    o.aggregated_args = {"--num_threads=1"};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    stub_ = testing::RouterStub(cluster_->router_address());
  }

  // The workers' own counters (their /metrics).
  WorkerHits ScrapeWorkers() {
    WorkerHits h;
    const std::vector<std::string>& m = cluster_->metrics_addresses();
    for (size_t i = 1; i < m.size(); ++i) {  // [0] is the router
      absl::StatusOr<std::string> text = testing::HttpGet(m[i], "/metrics");
      EXPECT_TRUE(text.ok()) << text.status();
      if (!text.ok()) continue;
      h.queried += testing::SumMetric(*text, "tandem_prefix_cache_queried_tokens_total");
      h.hit += testing::SumMetric(*text, "tandem_prefix_cache_hit_tokens_total");
    }
    return h;
  }

  double RouterMetric(const std::string& name) {
    absl::StatusOr<std::string> text = testing::HttpGet(cluster_->metrics_addresses()[0], "/metrics");
    return text.ok() ? testing::SumMetric(*text, name) : -1;
  }

  int64_t VocabSize() {
    grpc::ClientContext ctx;
    v1::ModelInfo info;
    EXPECT_TRUE(stub_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
    return info.vocab_size();
  }

  // Kills the router (a crash: no goodbye to anyone) and starts a new one
  // on its port with `args` added.
  ::testing::AssertionResult CrashAndRestartRouter(const std::vector<std::string>& args) {
    kill(cluster_->router_pid(), SIGKILL);
    absl::Status s = cluster_->RestartRouter(args);
    if (!s.ok()) return ::testing::AssertionFailure() << s;
    return WaitForWorkers();
  }

  // Waits until all workers registered with the (possibly new) router.
  ::testing::AssertionResult WaitForWorkers() {
    // A new channel: the old one's reconnect backoff grew while the router was down.
    stub_ = testing::RouterStub(cluster_->router_address());
    std::string last;
    for (int i = 0; i < 600; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
      v1::ModelInfo info;
      grpc::Status st = stub_->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
      last = absl::StrCat(st.error_message(), " workers ", info.aggregated_workers());
      if (st.ok() && info.aggregated_workers() == kWorkers) {
        return ::testing::AssertionSuccess();
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
    return ::testing::AssertionFailure() << "the workers did not register with the restarted router (" << last
                                         << ")";
  }

  // Runs the multi-turn workload (8 interleaved conversations, 6 turns
  // each); returns the workers' hits during it and the oracle's.
  std::pair<WorkerHits, bench::PrefixHits> RunConversations(uint64_t seed) {
    bench::WorkloadOptions w;
    w.kind = bench::WorkloadKind::kMultiTurn;
    w.conversations = 8;
    w.num_requests = 48;
    w.input = bench::LengthSpec{bench::LengthSpec::Kind::kUniform, 24, 48};
    w.output = bench::LengthSpec{bench::LengthSpec::Kind::kFixed, 8, 8};
    w.vocab_size = VocabSize();
    w.max_context = 1024;
    w.seed = seed;
    absl::StatusOr<std::vector<bench::BenchRequest>> requests = bench::MakeWorkload(w);
    EXPECT_TRUE(requests.ok()) << requests.status();
    bench::LoadOptions lo;
    lo.concurrency = 8;  // every conversation at once, each turn right after the last answer
    lo.progress = false;
    lo.deadline_seconds = 60;
    const WorkerHits before = ScrapeWorkers();
    bench::LoadResult result = bench::RunLoad(*stub_, *requests, lo, seed);
    for (const bench::RequestRecord& r : result.records) EXPECT_TRUE(r.ok) << r.error;
    // The counters follow the lookups at once; give the last scrape a moment anyway.
    absl::SleepFor(absl::Milliseconds(200));
    return {ScrapeWorkers() - before, bench::OraclePrefixHits(result.records, kBlockSize, true)};
  }

  void ExpectNoBlockHeld() {
    absl::Status s = testing::WaitForNoUsedBlocks(cluster_->aggregated_addresses(), {});
    EXPECT_TRUE(s.ok()) << s;
  }

  static testing::TempDir* model_dir_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<v1::GenerationService::Stub> stub_;
};

testing::TempDir* PrefixRoutingTest::model_dir_ = nullptr;

TEST_F(PrefixRoutingTest, MultiTurnHitRateReachesTheOracleAndBeatsRoundRobin) {
  ASSERT_NO_FATAL_FAILURE(StartCluster("cache_aware"));
  auto [cache_aware, oracle] = RunConversations(1);
  // Round robin on the same workers (a new router), other conversations.
  ASSERT_TRUE(CrashAndRestartRouter({"--placement=round_robin"}));
  auto [round_robin, rr_oracle] = RunConversations(2);
  std::printf("prefix hit rate: cache_aware %.3f (oracle %.3f, %.0f%% of it), round_robin %.3f (oracle %.3f)\n",
              cache_aware.rate(), oracle.rate(), 100 * cache_aware.rate() / oracle.rate(), round_robin.rate(),
              rr_oracle.rate());
  ASSERT_GT(oracle.rate(), 0.5) << "the workload shares most of its prompts";
  EXPECT_GT(cache_aware.queried, 0);
  EXPECT_GE(cache_aware.rate(), 0.9 * oracle.rate());
  EXPECT_LT(round_robin.rate(), cache_aware.rate() - 0.2);
  ExpectNoBlockHeld();
}

TEST_F(PrefixRoutingTest, ARestartedRouterRebuildsItsIndexFromTheWorkers) {
  ASSERT_NO_FATAL_FAILURE(StartCluster("cache_aware"));
  // One conversation's first turn: 200 tokens, 12 full blocks.
  const int32_t vocab = static_cast<int32_t>(VocabSize()) / 2;
  std::vector<int32_t> history;
  for (int i = 0; i < 200; ++i) history.push_back(3 + (i * 7) % vocab);
  v1::GenerateRequest first;
  for (int32_t id : history) first.mutable_token_ids()->add_ids(id);
  first.mutable_sampling()->set_temperature(0);
  first.mutable_stopping()->set_max_new_tokens(4);
  first.mutable_stopping()->set_ignore_eos(true);
  testing::StreamResult r1 = testing::StreamGenerate(*stub_, first);
  ASSERT_TRUE(r1.status.ok()) << r1.status.error_message();
  const std::string worker = r1.decode_worker;

  ASSERT_TRUE(CrashAndRestartRouter({}));
  // The new router knows nothing until the workers' full sets come.
  bool indexed = false;
  for (int i = 0; i < 100 && !indexed; ++i) {
    indexed = RouterMetric("tandem_router_prefix_index_blocks") >= 12;
    if (!indexed) absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_TRUE(indexed) << "index blocks: " << RouterMetric("tandem_router_prefix_index_blocks");

  // The next turn: the history, the answer, a new message. It goes where
  // the history is, predicted by the rebuilt index, and hits there.
  v1::GenerateRequest next = first;
  for (int32_t id : r1.tokens) next.mutable_token_ids()->add_ids(id);
  for (int i = 0; i < 40; ++i) next.mutable_token_ids()->add_ids(11 + i % vocab);
  const WorkerHits before = ScrapeWorkers();
  testing::StreamResult r2 = testing::StreamGenerate(*stub_, next);
  ASSERT_TRUE(r2.status.ok()) << r2.status.error_message();
  EXPECT_EQ(r2.decode_worker, worker);
  EXPECT_GE(RouterMetric("tandem_router_routed_prefix_hit_tokens_total"), 12 * kBlockSize);
  // The worker counted the hit (its counters follow its load reports).
  double hit = 0;
  for (int i = 0; i < 40 && hit < 12 * kBlockSize; ++i) {
    hit = (ScrapeWorkers() - before).hit;
    if (hit < 12 * kBlockSize) absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_GE(hit, 12 * kBlockSize);
  ExpectNoBlockHeld();
}

}  // namespace
}  // namespace tandem
