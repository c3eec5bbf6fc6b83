// Router -> prefill -> UCX -> decode as real processes on loopback, against
// the monolithic `tandem generate`: same tokens in every layout, correct
// statuses for cancellation, deadlines, no room and dead workers, no leaked
// KV block anywhere afterwards, and refused pairing of mismatched layouts.
#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <regex>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "common/engine/local_generator.h"
#include "common/engine/model_loader.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_logs_test.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

using testing::RequestSpec;
using testing::StreamResult;

class DisaggregatedTest : public testing::ClusterLogsTest {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    ASSERT_TRUE(WriteTestModel(model_dir_->str()).ok());
  }
  static void TearDownTestSuite() { delete model_dir_; }

  std::unique_ptr<LocalCluster> StartCluster(int prefill, int decode,
                                             std::vector<std::string> decode_args = {},
                                             std::vector<std::string> prefill_args = {}) {
    LocalClusterOptions o;
    o.security = testing::TestSecurity();  // TANDEM_TEST_TLS=1: mutual TLS and tokens
    o.num_prefill = prefill;
    o.num_decode = decode;
    o.model_dir = model_dir_->str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_.str();
    o.decode_args = std::move(decode_args);
    o.decode_args.push_back("--num_threads=1");
    o.prefill_args = std::move(prefill_args);
    o.prefill_args.push_back("--num_threads=1");
    auto c = LocalCluster::Start(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Checks no block is in use anywhere, then that every process exits 0.
  void StopCluster(std::unique_ptr<LocalCluster> c) {
    EXPECT_TRUE(testing::WaitForNoUsedBlocks(c->decode_addresses(), c->prefill_addresses()).ok());
    absl::Status s = c->Stop();
    EXPECT_TRUE(s.ok()) << s;
  }

  // Runs every request concurrently and returns results in order.
  std::vector<StreamResult> RunConcurrently(const std::string& router,
                                            const std::vector<v1::GenerateRequest>& reqs,
                                            absl::Duration stagger = absl::ZeroDuration()) {
    std::vector<StreamResult> out(reqs.size());
    std::vector<std::thread> threads;
    auto stub = testing::RouterStub(router);
    for (size_t i = 0; i < reqs.size(); ++i) {
      threads.emplace_back([&, i] { out[i] = testing::StreamGenerate(*stub, reqs[i]); });
      if (stagger > absl::ZeroDuration()) absl::SleepFor(stagger);
    }
    for (auto& t : threads) t.join();
    return out;
  }

  static testing::TempDir* model_dir_;
};

testing::TempDir* DisaggregatedTest::model_dir_ = nullptr;

const std::vector<std::string> kPrompts = {
    "The quick brown fox", "Once upon a time in a land far away, there lived",
    "def fibonacci(n):", "Tokens stream from the decode worker to the router"};

TEST_F(DisaggregatedTest, TokensEqualTheMonolithicCliIn1P1D1P2D2P1D) {
  RequestSpec greedy;
  greedy.max_new_tokens = 10;
  RequestSpec seeded;
  seeded.temperature = 0.9f;
  seeded.top_p = 0.95f;
  seeded.top_k = 50;
  seeded.seed = 1234;
  seeded.max_new_tokens = 10;
  std::vector<std::pair<RequestSpec, std::vector<std::vector<int32_t>>>> expected;
  for (const RequestSpec& spec : {greedy, seeded}) {
    expected.emplace_back(spec, testing::MonolithicTokens(model_dir_->str(), spec, kPrompts));
    for (const auto& t : expected.back().second) ASSERT_EQ(t.size(), 10u) << "the CLI failed";
  }
  for (auto [p, d] : {std::pair{1, 1}, std::pair{1, 2}, std::pair{2, 1}}) {
    SCOPED_TRACE(absl::StrCat(p, "P", d, "D"));
    auto cluster = StartCluster(p, d);
    ASSERT_NE(cluster, nullptr);
    std::vector<v1::GenerateRequest> reqs;
    std::vector<std::vector<int32_t>> want;
    for (auto& [spec, tokens] : expected) {
      for (size_t i = 0; i < kPrompts.size(); ++i) {
        RequestSpec s = spec;
        s.prompt = kPrompts[i];
        reqs.push_back(testing::ToGenerateRequest(s));
        want.push_back(tokens[i]);
      }
    }
    std::vector<StreamResult> got = RunConcurrently(cluster->router_address(), reqs);
    std::set<std::string> prefills, decodes;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
      EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
      EXPECT_EQ(got[i].finish_reason, v1::FINISH_REASON_LENGTH);
      prefills.insert(got[i].prefill_worker);
      decodes.insert(got[i].decode_worker);
    }
    StopCluster(std::move(cluster));
  }
}

TEST_F(DisaggregatedTest, SixtyFourConcurrentRequestsJoinAndLeaveTheDecodeBatch) {
  setenv("TANDEM_LOG_LEVEL", "debug", 1);
  auto cluster = StartCluster(1, 1, {"--max_batch_size=32"});
  unsetenv("TANDEM_LOG_LEVEL");
  ASSERT_NE(cluster, nullptr);

  // Mixed prompt and output lengths, greedy and seeded.
  std::vector<GenerationRequest> local;
  std::vector<v1::GenerateRequest> reqs;
  auto model = LoadModel(ModelSource{model_dir_->str(), false, 0});
  ASSERT_TRUE(model.ok()) << model.status();
  for (int i = 0; i < 64; ++i) {
    RequestSpec s;
    s.prompt = absl::StrCat("request ", i, ":");
    for (int w = 0; w < (i * 7) % 23; ++w) s.prompt += absl::StrCat(" word", (w * i) % 11);
    s.max_new_tokens = 1 + (i * 13) % 40;
    if (i % 2) {
      s.temperature = 0.8f;
      s.seed = 100 + i;
    }
    reqs.push_back(testing::ToGenerateRequest(s));
    GenerationRequest g;
    g.prompt = model->tokenizer->Encode(s.prompt, true);
    g.sampling.temperature = s.temperature;
    if (s.seed >= 0) g.sampling.seed = s.seed;
    g.stopping.max_new_tokens = s.max_new_tokens;
    g.stopping.ignore_eos = true;
    local.push_back(g);
  }
  // The monolithic engine's tokens, computed here.
  BackendOptions bo;
  bo.num_threads = 1;
  auto backend = CreateBackend(*model, bo);
  ASSERT_TRUE(backend.ok());
  Engine engine(std::move(*backend));
  LocalGenerator generator(engine, *model->tokenizer);
  std::vector<std::vector<int32_t>> want(local.size());
  ASSERT_TRUE(generator.Run(local, [&](const GenerationEvent& e) {
    if (e.token >= 0) want[e.request].push_back(e.token);
  }).ok());

  std::vector<StreamResult> got =
      RunConcurrently(cluster->router_address(), reqs, absl::Milliseconds(3));
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << i << ": " << got[i].status.error_message();
    EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
  }
  StopCluster(std::move(cluster));

  // The decode worker logs every change of its batch size. Sequences joined
  // a running batch (a -> b with 0 < a < b) and left one that kept running
  // (a -> b with 0 < b < a).
  const std::string log = testing::ReadFile(logs_.str() + "/decode0.log");
  std::regex change("decode batch size (\\d+) -> (\\d+)");
  int joins = 0, leaves = 0, max_batch = 0;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), change); it != std::sregex_iterator(); ++it) {
    const int a = std::stoi((*it)[1]), b = std::stoi((*it)[2]);
    if (a > 0 && b > a) ++joins;
    if (b > 0 && b < a) ++leaves;
    max_batch = std::max(max_batch, b);
  }
  EXPECT_GT(joins, 0) << log.substr(0, 2000);
  EXPECT_GT(leaves, 0);
  EXPECT_GT(max_batch, 4);
}

TEST_F(DisaggregatedTest, ADecodeWorkerOutOfBlocksPreemptsAndStillMatches) {
  // 16 blocks of 16 tokens: six requests of ~80 tokens each cannot all fit,
  // so the decode worker must preempt (and recompute) rather than fail.
  setenv("TANDEM_LOG_LEVEL", "debug", 1);
  auto cluster = StartCluster(1, 1, {"--num_kv_blocks=16"});
  unsetenv("TANDEM_LOG_LEVEL");
  ASSERT_NE(cluster, nullptr);
  RequestSpec spec;
  spec.max_new_tokens = 70;
  spec.temperature = 0.7f;
  spec.seed = 99;
  std::vector<std::string> prompts;
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    prompts.push_back(absl::StrCat("preempt me please, number ", i));
    RequestSpec s = spec;
    s.prompt = prompts.back();
    reqs.push_back(testing::ToGenerateRequest(s));
  }
  const auto want = testing::MonolithicTokens(model_dir_->str(), spec, prompts);
  std::vector<StreamResult> got = RunConcurrently(cluster->router_address(), reqs);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.error_message();
    EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
  }
  auto load = testing::DecodeLoad(cluster->decode_addresses()[0]);
  ASSERT_TRUE(load.ok());
  StopCluster(std::move(cluster));
  const std::string log = testing::ReadFile(logs_.str() + "/decode0.log");
  EXPECT_NE(log.find("preempt"), std::string::npos) << "no preemption happened; the test lost its point";
}

TEST_F(DisaggregatedTest, CancelledDeadlineAndNoRoomEndCleanly) {
  // 64 blocks of 16 tokens: 1024 positions on the decode worker.
  auto cluster = StartCluster(1, 1, {"--num_kv_blocks=64"});
  ASSERT_NE(cluster, nullptr);
  auto stub = testing::RouterStub(cluster->router_address());

  RequestSpec long_run;
  long_run.prompt = "Cancel me after a few tokens";
  long_run.max_new_tokens = 800;
  StreamResult cancelled = testing::StreamGenerate(*stub, testing::ToGenerateRequest(long_run), 3);
  EXPECT_EQ(cancelled.status.error_code(), grpc::StatusCode::CANCELLED)
      << cancelled.status.error_message();

  StreamResult late = testing::StreamGenerate(*stub, testing::ToGenerateRequest(long_run), -1,
                                              absl::Milliseconds(150));
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << late.status.error_message();

  RequestSpec huge;
  for (int i = 0; i < 400; ++i) huge.prompt += " many words here";
  huge.max_new_tokens = 4;
  StreamResult no_room = testing::StreamGenerate(*stub, testing::ToGenerateRequest(huge));
  EXPECT_EQ(no_room.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << no_room.status.error_message();

  // The cluster still serves.
  RequestSpec ok;
  ok.prompt = "Still alive?";
  EXPECT_TRUE(testing::StreamGenerate(*stub, testing::ToGenerateRequest(ok)).status.ok());
  StopCluster(std::move(cluster));
}

// A Decode call whose prompt needs more blocks than its transfer reserved
// (a router bug or a forged call, straight to the decode worker) is
// refused, and the reservation's blocks go back.
TEST_F(DisaggregatedTest, ADecodeCallLongerThanItsReservationIsRefusedAndFreesIt) {
  auto cluster = StartCluster(1, 1, {"--block_size=16"});
  ASSERT_NE(cluster, nullptr);
  auto channel = testing::ClusterChannel(cluster->decode_addresses()[0]);
  auto decode = v1::DecodeService::NewStub(channel);
  v1::ReserveKvRequest reserve;
  reserve.set_request_id("too-long");
  reserve.set_prompt_tokens(16);  // one block
  v1::ReserveKvResponse reserved;
  grpc::ClientContext reserve_ctx;
  ASSERT_TRUE(decode->ReserveKv(&reserve_ctx, reserve, &reserved).ok());
  ASSERT_EQ(reserved.block_ids_size(), 1);

  v1::DecodeRequest req;
  req.set_request_id("too-long");
  req.set_transfer_id(reserved.transfer_id());
  for (int i = 0; i < 40; ++i) req.add_prompt_token_ids(5 + i);  // three blocks' worth
  req.mutable_first_token()->set_id(7);
  req.mutable_stopping()->set_max_new_tokens(2);
  grpc::ClientContext ctx;
  auto reader = decode->Decode(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  const grpc::Status s = reader->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_NE(s.error_message().find("too few"), std::string::npos) << s.error_message();
  StopCluster(std::move(cluster));  // checks that no block is left in use
}

TEST_F(DisaggregatedTest, AKilledDecodeWorkerFailsItsRequestsAndIsNoLongerUsed) {
  auto cluster = StartCluster(1, 2);
  ASSERT_NE(cluster, nullptr);
  const std::string victim = cluster->decode_addresses()[0];
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < 8; ++i) {
    RequestSpec s;
    s.prompt = absl::StrCat("long generation number ", i);
    s.max_new_tokens = 1500;
    reqs.push_back(testing::ToGenerateRequest(s));
  }
  std::vector<StreamResult> got(reqs.size());
  std::vector<std::thread> threads;
  auto stub = testing::RouterStub(cluster->router_address());
  for (size_t i = 0; i < reqs.size(); ++i) {
    threads.emplace_back([&, i] { got[i] = testing::StreamGenerate(*stub, reqs[i]); });
  }
  // Kill once the victim runs some of them (a fixed sleep raced the
  // placement on a loaded machine, TLS handshakes included).
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  for (absl::StatusOr<v1::LoadReport> load = testing::DecodeLoad(victim);
       absl::Now() < give_up && !(load.ok() && load->running_requests() > 0); load = testing::DecodeLoad(victim)) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_EQ(kill(cluster->decode_pid(0), SIGKILL), 0);
  for (auto& t : threads) t.join();
  int failed = 0;
  for (const StreamResult& r : got) {
    if (r.status.ok()) {
      EXPECT_NE(r.decode_worker, victim);
      continue;
    }
    ++failed;
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::UNAVAILABLE) << r.status.error_message();
    // Clients are not told internal addresses (the router logs them).
    EXPECT_EQ(r.status.error_message().find(victim), std::string::npos) << r.status.error_message();
  }
  EXPECT_GT(failed, 0) << "no request was on the killed worker";

  // New requests go to the survivor.
  for (int i = 0; i < 4; ++i) {
    RequestSpec s;
    s.prompt = absl::StrCat("after the crash ", i);
    StreamResult r = testing::StreamGenerate(*stub, testing::ToGenerateRequest(s));
    EXPECT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.decode_worker, cluster->decode_addresses()[1]);
  }
  EXPECT_TRUE(testing::WaitForNoUsedBlocks({cluster->decode_addresses()[1]},
                                           cluster->prefill_addresses())
                  .ok());
}

// Starts a cluster whose decode and prefill workers got different flags;
// the registration of whichever registers second (the prefill worker, as
// the cluster starts it after the decode worker, unless it is slower) must
// be refused naming `what`. The refused prefill worker never pairs: with no
// live prefill worker the decode worker prefills requests itself, so a
// request is still served, by it alone.
void ExpectWorkersRefuseToPair(const std::string& model_dir, const std::string& logs_dir,
                               std::vector<std::string> decode_args, std::vector<std::string> prefill_args,
                               const std::string& what) {
  LocalClusterOptions o;
  o.security = testing::TestSecurity();  // TANDEM_TEST_TLS=1: mutual TLS and tokens
  o.model_dir = model_dir;
  o.bin_dir = testing::BinDir();
  o.log_dir = logs_dir;
  o.decode_args = std::move(decode_args);
  o.prefill_args = std::move(prefill_args);
  o.wait_for_workers = false;
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  const absl::Time give_up = absl::Now() + absl::Seconds(20);
  std::string log;
  while (absl::Now() < give_up) {
    log = testing::ReadFile(logs_dir + "/prefill0.log") + testing::ReadFile(logs_dir + "/decode0.log");
    if (log.find("refused registration") != std::string::npos) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_NE(log.find(what), std::string::npos) << log;
  auto stub = testing::RouterStub((*cluster)->router_address());
  RequestSpec s;
  s.prompt = "hello";
  StreamResult r = testing::StreamGenerate(*stub, testing::ToGenerateRequest(s));
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_FALSE(r.tokens.empty());
  EXPECT_EQ(r.prefill_worker, r.decode_worker);
  EXPECT_TRUE((*cluster)->Stop().ok());
}

TEST_F(DisaggregatedTest, WorkersWithDifferentKvLayoutsRefuseToPair) {
  ExpectWorkersRefuseToPair(model_dir_->str(), logs_.str(), {"--block_size=16"}, {"--block_size=32"}, "block_size");
}

// bf16 and fp32 activations give different KV and logits: a prefill worker
// computing one way must not hand its KV to a decode worker computing the
// other, or the tokens would differ from a single-process run.
TEST_F(DisaggregatedTest, WorkersWithDifferentNumericsRefuseToPair) {
  ExpectWorkersRefuseToPair(model_dir_->str(), logs_.str(), {"--cpu_bf16_activations=on"},
                            {"--cpu_bf16_activations=off"}, "engine numerics mismatch");
}

}  // namespace
}  // namespace tandem
