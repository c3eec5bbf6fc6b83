// ChoiceRunner in-process against scripted decode and prefill workers (real
// gRPC servers, tests/router/fake_workers): n choices each run their own
// call and arrive indexed and in order, and a client that goes away while
// a prefill hangs cancels it and frees the reservation.
#include "router/http/choice_runner.h"

#include <atomic>

#include "common/default_model/test_model.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/serving_metrics.h"
#include "gtest/gtest.h"
#include "tests/router/fake_workers.h"
#include "tests/testing/temp_dir.h"

namespace tandem::router::http {
namespace {

using testing::DecodeScript;
using testing::FakeDecodeWorker;
using testing::FakePrefillWorker;
using testing::PrefillScript;

class ChoiceRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteTestModel(model_dir_.str()).ok());
    auto metrics_server = MetricsServer::Start("127.0.0.1:0", {{"role", "router"}});
    ASSERT_TRUE(metrics_server.ok()) << metrics_server.status();
    metrics_server_ = std::move(*metrics_server);
    metrics_ = std::make_unique<RouterMetrics>(*metrics_server_);
    ctx_.config.worker_timeout_seconds = 30;
    ctx_.model_name = "m";
    auto model = LoadModelConfig(model_dir_.str() + "/config.json");
    ASSERT_TRUE(model.ok()) << model.status();
    ctx_.model = *model;
    auto tokenizer = Tokenizer::FromDir(model_dir_.str());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    ctx_.tokenizer = std::move(*tokenizer);
    ctx_.metrics = metrics_.get();
    WorkerRegistryOptions ro;
    ro.model_name = "m";
    registry_ = std::make_unique<WorkerRegistry>(ro);
    ctx_.registry = registry_.get();
    generation_ = std::make_unique<GenerationServiceImpl>(ctx_);
  }

  void Register(const std::string& address, v1::WorkerRole role, int64_t blocks) {
    ASSERT_TRUE(registry_->Register(testing::FakeWorkerInfo(address, role, blocks)).ok());
  }

  static v1::GenerateRequest Request(const std::string& id) {
    v1::GenerateRequest r;
    r.set_request_id(id);
    r.set_text("Hello");
    r.mutable_stopping()->set_max_new_tokens(8);
    r.mutable_stopping()->set_ignore_eos(true);
    return r;
  }

  tandem::testing::TempDir model_dir_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::unique_ptr<RouterMetrics> metrics_;
  RouterContext ctx_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<GenerationServiceImpl> generation_;
};

TEST_F(ChoiceRunnerTest, EveryChoiceRunsItsOwnCallAndEndsOnce) {
  const std::vector<int32_t> answer = ctx_.tokenizer->Encode(" one two three", false);
  ASSERT_GE(answer.size(), 3u);
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  FakeDecodeWorker decode(DecodeScript{.tokens = {answer[1], answer[2]}});
  Register(decode.address(), v1::WORKER_ROLE_DECODE, 1000);
  Register(prefill.address(), v1::WORKER_ROLE_PREFILL, 0);
  ChoiceRunner runner(*generation_, {Request("a-0"), Request("a-1")}, [] { return false; });
  std::vector<std::vector<int32_t>> ids(2);
  std::vector<int> done(2, 0);
  while (!runner.finished()) {
    std::optional<ChoiceRunner::Event> e = runner.Next(absl::Seconds(5));
    ASSERT_TRUE(e.has_value()) << "no event within 5 s";
    ASSERT_TRUE(e->index == 0 || e->index == 1);
    ASSERT_EQ(done[e->index], 0) << "an event after its choice ended";
    if (e->done) {
      EXPECT_TRUE(e->status.ok()) << e->status.error_message();
      ++done[e->index];
      continue;
    }
    EXPECT_EQ(e->response.request_id(), e->index == 0 ? "a-0" : "a-1");
    for (const v1::GeneratedToken& t : e->response.tokens()) ids[e->index].push_back(t.id());
  }
  EXPECT_EQ(done, std::vector<int>({1, 1}));
  for (const auto& choice : ids) EXPECT_EQ(choice, std::vector<int32_t>({answer[0], answer[1], answer[2]}));
  EXPECT_EQ(prefill.prefills.size(), 2u);
}

TEST_F(ChoiceRunnerTest, ClientGoneDuringPrefillCancelsItAndReleasesKv) {
  FakePrefillWorker prefill(PrefillScript{.hang = true});
  FakeDecodeWorker decode(DecodeScript{});
  Register(decode.address(), v1::WORKER_ROLE_DECODE, 1000);
  Register(prefill.address(), v1::WORKER_ROLE_PREFILL, 0);
  std::atomic<bool> gone{false};
  std::optional<ChoiceRunner::Event> e;
  {
    ChoiceRunner runner(*generation_, {Request("b")}, [&gone] { return gone.load(); });
    ASSERT_TRUE(prefill.WaitFor([&] { return !prefill.prefills.empty(); }));
    gone = true;  // what the connection watch reports when the socket closes
    e = runner.Next(absl::Seconds(5));
  }
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(e->done);
  EXPECT_EQ(e->status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(prefill.WaitFor([&] { return prefill.cancelled; })) << "the prefill call was not cancelled";
  ASSERT_TRUE(decode.WaitFor([&] { return decode.released_transfer_ids.size() == 1; }));
  EXPECT_EQ(decode.released_transfer_ids, decode.issued_transfer_ids);
  EXPECT_TRUE(decode.decodes.empty());
}

}  // namespace
}  // namespace tandem::router::http
