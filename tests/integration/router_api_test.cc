// The public API of a running cluster beyond generation itself: request
// validation with clear statuses, Tokenize/Detokenize, GetModelInfo, stop
// strings across tokens, overload, and health/reflection on every process.
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "common/tokenizer/tokenizer.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

using testing::RequestSpec;

class RouterApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    logs_ = new testing::TempDir();
    ASSERT_TRUE(WriteTestModel(dir_->str()).ok());
    LocalClusterOptions o;
    o.security = testing::TestSecurity();  // TANDEM_TEST_TLS=1: mutual TLS and tokens
    o.model_dir = dir_->str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_->str();
    o.router_args = {"--max_inflight_requests=4", "--max_queued_requests=2"};
    o.decode_args = {"--num_threads=1"};
    o.prefill_args = {"--num_threads=1"};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = c->release();
  }
  static void TearDownTestSuite() {
    if (cluster_ != nullptr) {
      EXPECT_TRUE(testing::WaitForNoUsedBlocks(cluster_->decode_addresses(), cluster_->prefill_addresses()).ok());
      EXPECT_TRUE(cluster_->Stop().ok());
      delete cluster_;
    }
    delete dir_;
    delete logs_;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    stub_ = testing::RouterStub(cluster_->router_address());
  }

  static testing::TempDir* dir_;
  static testing::TempDir* logs_;
  static LocalCluster* cluster_;
  std::unique_ptr<v1::GenerationService::Stub> stub_;
};

testing::TempDir* RouterApiTest::dir_ = nullptr;
testing::TempDir* RouterApiTest::logs_ = nullptr;
LocalCluster* RouterApiTest::cluster_ = nullptr;

TEST_F(RouterApiTest, BadRequestsAreInvalidArgumentNamingTheProblem) {
  struct Case {
    std::function<void(v1::GenerateRequest&)> change;
    std::string needle;
  } cases[] = {
      {[](v1::GenerateRequest& r) { r.clear_text(); }, "no prompt"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-1); }, "temperature"},
      {[](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(0); }, "top_p"},
      {[](v1::GenerateRequest& r) { r.mutable_stopping()->set_max_new_tokens(0); }, "max_new_tokens"},
      {[](v1::GenerateRequest& r) { r.set_logprobs(50); }, "logprobs"},
      {[](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(1 << 20); }, "outside the vocabulary"},
      {[](v1::GenerateRequest& r) { r.mutable_stopping()->add_stop_token_ids(-3); }, "stop_token_ids"},
  };
  for (const Case& c : cases) {
    RequestSpec s;
    s.prompt = "hello";
    v1::GenerateRequest req = testing::ToGenerateRequest(s);
    c.change(req);
    testing::StreamResult r = testing::StreamGenerate(*stub_, req);
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.needle;
    EXPECT_NE(r.status.error_message().find(c.needle), std::string::npos) << r.status.error_message();
  }
}

TEST_F(RouterApiTest, TokenizeDetokenizeAndModelInfo) {
  auto tokenizer = Tokenizer::FromDir(dir_->str());
  ASSERT_TRUE(tokenizer.ok());
  grpc::ClientContext c1;
  v1::TokenizeRequest treq;
  treq.set_text("The quick brown fox");
  v1::TokenizeResponse tresp;
  ASSERT_TRUE(stub_->Tokenize(&c1, treq, &tresp).ok());
  const std::vector<int32_t> want = (*tokenizer)->Encode("The quick brown fox", true);
  EXPECT_EQ(std::vector<int32_t>(tresp.token_ids().begin(), tresp.token_ids().end()), want);
  EXPECT_EQ(tresp.tokens_size(), tresp.token_ids_size());

  grpc::ClientContext c2;
  v1::DetokenizeRequest dreq;
  *dreq.mutable_token_ids() = tresp.token_ids();
  dreq.set_skip_special_tokens(true);
  v1::DetokenizeResponse dresp;
  ASSERT_TRUE(stub_->Detokenize(&c2, dreq, &dresp).ok());
  EXPECT_EQ(dresp.text(), "The quick brown fox");

  grpc::ClientContext c3;
  v1::ModelInfo info;
  ASSERT_TRUE(stub_->GetModelInfo(&c3, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info.vocab_size(), (*tokenizer)->vocab_size());
  EXPECT_EQ(info.prefill_workers(), 1);
  EXPECT_EQ(info.decode_workers(), 1);
  EXPECT_EQ(info.kv_block_size(), 16);
  EXPECT_GT(info.kv_blocks_total(), 0);
}

TEST_F(RouterApiTest, StopStringAcrossTokensEndsTheStreamWithoutTheStopText) {
  // Find a stop string that spans a token boundary of a greedy generation.
  RequestSpec s;
  s.prompt = "Once upon a time";
  s.max_new_tokens = 24;
  testing::StreamResult full = testing::StreamGenerate(*stub_, testing::ToGenerateRequest(s));
  ASSERT_TRUE(full.status.ok());
  ASSERT_GT(full.text.size(), 12u);
  const std::string stop = full.text.substr(6, 4);
  s.stop = {stop};
  testing::StreamResult stopped = testing::StreamGenerate(*stub_, testing::ToGenerateRequest(s));
  ASSERT_TRUE(stopped.status.ok()) << stopped.status.error_message();
  EXPECT_EQ(stopped.finish_reason, v1::FINISH_REASON_STOP);
  EXPECT_EQ(stopped.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_LT(stopped.tokens.size(), full.tokens.size());
}

// Past the in-flight limit requests queue; only those beyond the queue's
// bound are refused, and the message says the queue is full.
TEST_F(RouterApiTest, OverloadQueuesThenIsResourceExhaustedWithTheReason) {
  RequestSpec s;
  s.prompt = "keep the router busy";
  s.max_new_tokens = 600;
  std::vector<testing::StreamResult> results(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { results[i] = testing::StreamGenerate(*stub_, testing::ToGenerateRequest(s)); });
  }
  for (auto& t : threads) t.join();
  int exhausted = 0, served = 0;
  for (const auto& r : results) {
    if (r.status.ok()) {
      ++served;
      continue;
    }
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << r.status.error_message();
    EXPECT_NE(r.status.error_message().find("queue is full (2 requests waiting, 4 running)"), std::string::npos)
        << r.status.error_message();
    ++exhausted;
  }
  // 4 run, 2 wait and then run: 600 tokens take far longer than the 8 calls
  // take to arrive, so exactly the last 2 find the queue full.
  EXPECT_EQ(served, 6);
  EXPECT_EQ(exhausted, 2);
}

TEST_F(RouterApiTest, EveryProcessServesGrpcHealth) {
  std::vector<std::string> addresses = {cluster_->router_address()};
  for (const auto& a : cluster_->prefill_addresses()) addresses.push_back(a);
  for (const auto& a : cluster_->decode_addresses()) addresses.push_back(a);
  for (const std::string& a : addresses) {
    auto health = grpc::health::v1::Health::NewStub(testing::ClusterChannel(a));
    grpc::ClientContext c;
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    ASSERT_TRUE(health->Check(&c, req, &resp).ok()) << a;
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << a;
  }
}

}  // namespace
}  // namespace tandem
