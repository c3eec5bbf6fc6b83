// Prefix caching on the disaggregated path, with real processes on
// loopback (router -> prefill worker -> decode worker): a ~2,000-token
// prompt sent twice computes at most one block of it the second time on
// the prefill worker, the decode worker starts its reservation from its
// own cached prefix so only the last block is shipped, and the tokens
// equal the monolithic `tandem generate`'s. Under a small KV pool the
// caches are evicted to make room and no request is lost. Every test ends
// with no KV block held anywhere.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/default_model/default_model.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_logs_test.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

using testing::RequestSpec;
using testing::StreamResult;

constexpr int32_t kBlockSize = 16;  // the workers' default --block_size

// One worker's counters, read from its /metrics after a GetLoad (which
// refreshes them from its KV cache manager).
struct WorkerCounters {
  double queried = 0, hit = 0, evictions = 0, prefill_tokens = 0, kv_bytes = 0;
  WorkerCounters operator-(const WorkerCounters& o) const {
    return {queried - o.queried, hit - o.hit, evictions - o.evictions, prefill_tokens - o.prefill_tokens,
            kv_bytes - o.kv_bytes};
  }
};

class PrefixCacheTest : public testing::ClusterLogsTest {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    ASSERT_TRUE(WriteDefaultModel(model_dir_->str()).ok());
  }
  static void TearDownTestSuite() { delete model_dir_; }

  void StartCluster(std::vector<std::string> worker_args = {}) {
    LocalClusterOptions o;
    o.security = testing::TestSecurity();
    o.num_prefill = 1;
    o.num_decode = 1;
    o.model_dir = model_dir_->str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_.str();
    worker_args.push_back("--num_threads=1");
    o.prefill_args = worker_args;
    o.decode_args = worker_args;
    // Load reports (the router's view of free blocks) every 100 ms.
    o.router_args = {"--report_interval_seconds=0.1"};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    stub_ = testing::RouterStub(cluster_->router_address());
  }

  // metrics_addresses(): router, then prefill, then decode.
  WorkerCounters Counters(bool prefill) {
    const std::string& grpc_address =
        prefill ? cluster_->prefill_addresses()[0] : cluster_->decode_addresses()[0];
    EXPECT_TRUE((prefill ? testing::PrefillLoad(grpc_address) : testing::DecodeLoad(grpc_address)).ok());
    const std::string& metrics = cluster_->metrics_addresses()[prefill ? 1 : 2];
    absl::StatusOr<std::string> text = testing::HttpGet(metrics, "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    if (!text.ok()) return {};
    WorkerCounters c;
    c.queried = testing::SumMetric(*text, "tandem_prefix_cache_queried_tokens_total");
    c.hit = testing::SumMetric(*text, "tandem_prefix_cache_hit_tokens_total");
    c.evictions = testing::SumMetric(*text, "tandem_prefix_cache_evictions_total");
    c.prefill_tokens = testing::SumMetric(*text, "tandem_prefill_prompt_tokens_total");
    c.kv_bytes = testing::SumMetric(*text, "tandem_kv_transfer_bytes_total");
    return c;
  }

  void StopCluster() {
    absl::Status s = testing::WaitForNoUsedBlocks(cluster_->decode_addresses(), cluster_->prefill_addresses());
    EXPECT_TRUE(s.ok()) << s;
    s = cluster_->Stop();
    EXPECT_TRUE(s.ok()) << s;
  }

  static testing::TempDir* model_dir_;
  std::unique_ptr<LocalCluster> cluster_;
  std::unique_ptr<v1::GenerationService::Stub> stub_;
};

testing::TempDir* PrefixCacheTest::model_dir_ = nullptr;

// About `tokens` tokens of plain text (no quotes: it goes through a shell).
std::string LongText(int tokens, const std::string& topic) {
  std::string text;
  for (int i = 0; static_cast<int>(text.size()) < tokens * 2; ++i) {
    absl::StrAppend(&text, "Entry ", i, " of the ", topic, " log records the tide, the wind and the ships seen. ");
  }
  return text;
}

TEST_F(PrefixCacheTest, TheSameLongPromptTwiceComputesAndShipsAtMostOneBlockTheSecondTime) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  RequestSpec spec;
  spec.prompt = LongText(2000, "harbour");
  spec.max_new_tokens = 8;
  const v1::GenerateRequest req = testing::ToGenerateRequest(spec);

  StreamResult first = testing::StreamGenerate(*stub_, req);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const WorkerCounters prefill0 = Counters(true), decode0 = Counters(false);
  ASSERT_GT(prefill0.prefill_tokens, 1500) << "the prompt should be about 2,000 tokens";

  StreamResult second = testing::StreamGenerate(*stub_, req);
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  const WorkerCounters prefill = Counters(true) - prefill0, decode = Counters(false) - decode0;
  std::printf("second request: prefill computed %.0f of %.0f prompt tokens (hit %.0f), decode held %.0f, "
              "shipped %.0f bytes (first: %.0f)\n",
              prefill.prefill_tokens, prefill.queried, prefill.hit, decode.hit, prefill.kv_bytes, prefill0.kv_bytes);
  EXPECT_LE(prefill.prefill_tokens, kBlockSize);
  EXPECT_GE(prefill.hit, prefill.queried - kBlockSize);
  // The decode worker reserved from its own cache: one block travelled.
  EXPECT_GE(decode.hit, decode.queried - kBlockSize);
  EXPECT_LE(prefill.kv_bytes, prefill0.kv_bytes / (prefill0.prefill_tokens / kBlockSize - 1));
  EXPECT_EQ(second.tokens, first.tokens);
  const auto reference = testing::MonolithicTokens(model_dir_->str(), spec, {spec.prompt});
  EXPECT_EQ(first.tokens, reference[0]);
  StopCluster();
}

TEST_F(PrefixCacheTest, SharedPrefixesUnderASmallPoolAreEvictedLoseNoRequestAndEqualMonolithic) {
  // 64 blocks of 16 on each worker: room for about two of these prompts
  // (the router's view of free blocks may be a report behind), so the
  // caches of earlier ones are evicted for later ones.
  ASSERT_NO_FATAL_FAILURE(StartCluster({"--num_kv_blocks=64"}));
  const std::string shared = LongText(200, "lighthouse");
  std::vector<std::string> prompts;
  for (int i = 0; i < 10; ++i) {
    prompts.push_back(i % 2 == 0 ? absl::StrCat(shared, " Question ", i, ": what came next?")
                                 : LongText(150 + 10 * i, absl::StrCat("ferry ", i)));
  }
  RequestSpec spec;
  spec.max_new_tokens = 12;
  // One at a time: the pool holds one running request with room to spare,
  // so it is the cache, not the running requests, that fills it; later
  // prompts evict earlier ones' blocks, and the shared prefix is found when
  // it survived.
  std::vector<StreamResult> results;
  for (const std::string& p : prompts) {
    RequestSpec s = spec;
    s.prompt = p;
    results.push_back(testing::StreamGenerate(*stub_, testing::ToGenerateRequest(s)));
  }
  const auto reference = testing::MonolithicTokens(model_dir_->str(), spec, prompts);
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(results[i].status.ok()) << i << ": " << results[i].status.error_message();
    EXPECT_EQ(results[i].tokens, reference[i]) << "request " << i;
  }
  const WorkerCounters prefill = Counters(true), decode = Counters(false);
  EXPECT_GT(prefill.evictions + decode.evictions, 0);
  EXPECT_GT(prefill.hit + decode.hit, 0);
  StopCluster();
}

TEST_F(PrefixCacheTest, RequestsOfAnotherCacheSaltShareNothing) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  RequestSpec spec;
  spec.prompt = LongText(300, "tenant");
  spec.max_new_tokens = 4;
  v1::GenerateRequest a = testing::ToGenerateRequest(spec);
  a.set_cache_salt("tenant-a");
  v1::GenerateRequest b = a;
  b.set_cache_salt("tenant-b");
  StreamResult first = testing::StreamGenerate(*stub_, a);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  const WorkerCounters prefill0 = Counters(true), decode0 = Counters(false);
  StreamResult other = testing::StreamGenerate(*stub_, b);
  ASSERT_TRUE(other.status.ok()) << other.status.error_message();
  const WorkerCounters prefill1 = Counters(true), decode1 = Counters(false);
  EXPECT_EQ((prefill1 - prefill0).hit, 0);
  EXPECT_EQ((decode1 - decode0).hit, 0);
  EXPECT_EQ(other.tokens, first.tokens);
  StreamResult again = testing::StreamGenerate(*stub_, a);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_GT((Counters(true) - prefill1).hit, 0);
  EXPECT_GT((Counters(false) - decode1).hit, 0);
  EXPECT_EQ(again.tokens, first.tokens);
  // A salt longer than the limit is the caller's error.
  v1::GenerateRequest too_long = a;
  too_long.set_cache_salt(std::string(257, 's'));
  EXPECT_EQ(testing::StreamGenerate(*stub_, too_long).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The workers check what the router would never send, and reserve nothing.
  auto decode = v1::DecodeService::NewStub(testing::ClusterChannel(cluster_->decode_addresses()[0]));
  v1::ReserveKvRequest reserve;
  reserve.set_request_id("bad");
  reserve.set_prompt_tokens(3);
  for (int32_t id : {5, 6}) reserve.add_prompt_token_ids(id);  // 2 ids for 3 tokens
  v1::ReserveKvResponse reserved;
  {
    grpc::ClientContext c;
    EXPECT_EQ(decode->ReserveKv(&c, reserve, &reserved).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  reserve.add_prompt_token_ids(7);
  reserve.set_cache_salt(std::string(1000, 's'));
  {
    grpc::ClientContext c;
    EXPECT_EQ(decode->ReserveKv(&c, reserve, &reserved).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  auto prefill = v1::PrefillService::NewStub(testing::ClusterChannel(cluster_->prefill_addresses()[0]));
  v1::PrefillRequest pr;
  pr.set_request_id("bad");
  for (int32_t id : {5, 6, 7}) pr.add_prompt_token_ids(id);
  pr.mutable_destination()->add_block_ids(0);
  pr.mutable_destination()->set_num_cached_blocks(1);  // a whole block of a 3-token prompt
  v1::PrefillResponse presp;
  {
    grpc::ClientContext c;
    EXPECT_EQ(prefill->Prefill(&c, pr, &presp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  StopCluster();
}

}  // namespace
}  // namespace tandem
