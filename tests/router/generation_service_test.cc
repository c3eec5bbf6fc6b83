// The router's GenerationService in-process against scripted decode and
// prefill workers that are real gRPC servers registered through the real
// WorkerRegistry RPC: relay order and text, stop strings, KV release on
// every early end, statuses, cancellation and deadline propagation, and a
// decode worker dying mid-stream.
#include <chrono>
#include <memory>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "common/metrics/metrics_server.h"
#include "common/metrics/serving_metrics.h"
#include "common/model/model_config.h"
#include "common/rpc/grpc_server.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "router/generation_service.h"
#include "router/registry_service.h"
#include "tests/router/fake_workers.h"
#include "tests/testing/temp_dir.h"

namespace tandem::router {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::DecodeScript;
using testing::FakeDecodeWorker;
using testing::FakePrefillWorker;
using testing::PrefillScript;

struct Outcome {
  std::vector<v1::GenerateResponse> messages;
  std::vector<int32_t> ids;
  std::string text;  // token texts and the tail, as a client would join them
  grpc::Status status;
  const v1::GenerateResponse& last() const { return messages.back(); }
};

class GenerationServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new tandem::testing::TempDir();
    ASSERT_TRUE(WriteTestModel(model_dir_->str()).ok());
    if (metrics_ != nullptr) return;
    // One metrics endpoint for the process, never stopped: stopping its
    // HTTP server takes about two seconds, and CTest runs each case in a
    // process of its own.
    auto metrics_server = MetricsServer::Start("127.0.0.1:0", {{"role", "router"}});
    ASSERT_TRUE(metrics_server.ok()) << metrics_server.status();
    metrics_server_ = metrics_server->release();
    metrics_ = new RouterMetrics(*metrics_server_);
  }
  static void TearDownTestSuite() { delete model_dir_; }

  void SetUp() override {
    ctx_.config.max_inflight_requests = 8;
    ctx_.config.worker_timeout_seconds = 30;
    ctx_.model_name = "m";
    auto model = LoadModelConfig(model_dir_->str() + "/config.json");
    ASSERT_TRUE(model.ok()) << model.status();
    ctx_.model = *model;
    auto tokenizer = Tokenizer::FromDir(model_dir_->str());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    ctx_.tokenizer = std::move(*tokenizer);
    for (int64_t id : ctx_.model.eos_token_ids) ctx_.eos_ids.push_back(static_cast<int32_t>(id));
    ASSERT_NE(metrics_, nullptr);
    ctx_.metrics = metrics_;
    WorkerRegistryOptions ro;
    ro.model_name = "m";
    registry_ = std::make_unique<WorkerRegistry>(ro);
    ctx_.registry = registry_.get();
    generation_ = std::make_unique<GenerationServiceImpl>(ctx_);
    registry_service_ = std::make_unique<RegistryService>(*registry_);
    auto server = GrpcServer::Start("127.0.0.1:0", {generation_.get(), registry_service_.get()});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    stub_ = v1::GenerationService::NewStub(channel);
    registry_stub_ = v1::WorkerRegistry::NewStub(channel);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(absl::ZeroDuration());
  }

  static v1::WorkerInfo Info(const std::string& address, v1::WorkerRole role, int64_t blocks) {
    return testing::FakeWorkerInfo(address, role, blocks);
  }

  grpc::Status Register(const v1::WorkerInfo& info) {
    grpc::ClientContext c;
    v1::RegisterWorkerResponse r;
    return registry_stub_->RegisterWorker(&c, info, &r);
  }
  void RegisterDecode(const FakeDecodeWorker& w, int64_t blocks = 1000) {
    grpc::Status s = Register(Info(w.address(), v1::WORKER_ROLE_DECODE, blocks));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  void RegisterPrefill(const FakePrefillWorker& w) {
    grpc::Status s = Register(Info(w.address(), v1::WORKER_ROLE_PREFILL, 0));
    ASSERT_TRUE(s.ok()) << s.error_message();
  }

  v1::ModelInfo ModelInfo() {
    grpc::ClientContext c;
    v1::ModelInfo info;
    EXPECT_TRUE(stub_->GetModelInfo(&c, v1::GetModelInfoRequest(), &info).ok());
    return info;
  }

  static v1::GenerateRequest TextRequest(const std::string& text, int32_t max_new_tokens) {
    v1::GenerateRequest r;
    r.set_text(text);
    r.mutable_stopping()->set_max_new_tokens(max_new_tokens);
    r.mutable_stopping()->set_ignore_eos(true);
    return r;
  }

  // Runs one Generate. `on_message` sees each message as it arrives and may
  // cancel the call through the context.
  Outcome Generate(const v1::GenerateRequest& req,
                   std::function<void(grpc::ClientContext&, const v1::GenerateResponse&)> on_message = nullptr,
                   std::optional<std::chrono::milliseconds> deadline = std::nullopt,
                   grpc::ClientContext* external = nullptr) {
    grpc::ClientContext own;
    grpc::ClientContext& c = external != nullptr ? *external : own;
    if (deadline) c.set_deadline(std::chrono::system_clock::now() + *deadline);
    Outcome o;
    auto reader = stub_->Generate(&c, req);
    v1::GenerateResponse m;
    while (reader->Read(&m)) {
      for (const v1::GeneratedToken& t : m.tokens()) {
        o.ids.push_back(t.id());
        o.text += t.text();
      }
      o.text += m.text_tail();
      o.messages.push_back(m);
      if (on_message) on_message(c, m);
    }
    o.status = reader->Finish();
    return o;
  }

  std::vector<int32_t> Encode(const std::string& s) { return ctx_.tokenizer->Encode(s, false); }
  std::string Decode(const std::vector<int32_t>& ids) { return ctx_.tokenizer->Decode(ids, false); }

  static tandem::testing::TempDir* model_dir_;
  static MetricsServer* metrics_server_;
  static RouterMetrics* metrics_;
  RouterContext ctx_;
  std::unique_ptr<WorkerRegistry> registry_;
  std::unique_ptr<GenerationServiceImpl> generation_;
  std::unique_ptr<RegistryService> registry_service_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<v1::GenerationService::Stub> stub_;
  std::unique_ptr<v1::WorkerRegistry::Stub> registry_stub_;
};

tandem::testing::TempDir* GenerationServiceTest::model_dir_ = nullptr;
MetricsServer* GenerationServiceTest::metrics_server_ = nullptr;
RouterMetrics* GenerationServiceTest::metrics_ = nullptr;

TEST_F(GenerationServiceTest, RelaysPrefillTokenAtOnceThenDecodeTokensInOrderWithText) {
  const std::vector<int32_t> answer = Encode(" the quick brown fox jumps over the lazy dog");
  ASSERT_GE(answer.size(), 4u);
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  FakeDecodeWorker decode(
      DecodeScript{.tokens = std::vector<int32_t>(answer.begin() + 1, answer.end()), .wait_for_go = true});
  RegisterDecode(decode);
  RegisterPrefill(prefill);

  v1::GenerateRequest req = TextRequest("Once upon a time", static_cast<int32_t>(answer.size()));
  bool first_seen_before_decode_ran = false;
  Outcome o = Generate(req, [&](grpc::ClientContext&, const v1::GenerateResponse& m) {
    if (m.tokens_size() == 1 && m.tokens(0).id() == answer[0] && first_seen_before_decode_ran == false) {
      // Decode is held back: this token came straight from the prefill.
      first_seen_before_decode_ran = true;
      decode.Go();
    }
  });
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_TRUE(first_seen_before_decode_ran);
  EXPECT_EQ(o.ids, answer);
  EXPECT_EQ(o.text, Decode(answer));
  EXPECT_EQ(o.last().finish_reason(), v1::FINISH_REASON_LENGTH);
  const std::vector<int32_t> prompt = ctx_.tokenizer->Encode("Once upon a time", true);
  EXPECT_EQ(o.last().usage().prompt_tokens(), static_cast<int32_t>(prompt.size()));
  EXPECT_EQ(o.last().usage().completion_tokens(), static_cast<int32_t>(answer.size()));
  EXPECT_EQ(o.last().prefill_worker(), prefill.address());
  EXPECT_EQ(o.last().decode_worker(), decode.address());
  EXPECT_DOUBLE_EQ(o.last().timing().prefill_seconds(), 0.01);
  EXPECT_GT(o.last().timing().e2e_seconds(), 0.0);
  EXPECT_FALSE(o.messages[0].request_id().empty());

  // What each worker was asked: one reservation sized for the prompt, the
  // prefill aimed at it, the decode claiming it, one shared seed.
  ASSERT_EQ(decode.reserves.size(), 1u);
  EXPECT_EQ(decode.reserves[0].prompt_tokens(), static_cast<int32_t>(prompt.size()));
  EXPECT_EQ(decode.reserves[0].max_new_tokens(), static_cast<int32_t>(answer.size()));
  // The lease covers the prefill call's budget plus a slack, capped by the
  // configured TTL; the router names the reservation.
  EXPECT_GT(decode.reserves[0].ttl_seconds(), 1.0);
  EXPECT_LE(decode.reserves[0].ttl_seconds(), ctx_.config.kv_reservation_ttl_seconds);
  EXPECT_FALSE(decode.reserves[0].transfer_id().empty());
  ASSERT_EQ(prefill.prefills.size(), 1u);
  const v1::PrefillRequest& pr = prefill.prefills[0];
  EXPECT_EQ(std::vector<int32_t>(pr.prompt_token_ids().begin(), pr.prompt_token_ids().end()), prompt);
  EXPECT_EQ(pr.decode_worker(), decode.address());
  EXPECT_EQ(pr.destination().transfer_id(), decode.issued_transfer_ids[0]);
  ASSERT_EQ(decode.decodes.size(), 1u);
  const v1::DecodeRequest& dr = decode.decodes[0];
  EXPECT_EQ(dr.transfer_id(), decode.issued_transfer_ids[0]);
  EXPECT_EQ(dr.first_token().id(), answer[0]);
  EXPECT_EQ(dr.seed(), pr.seed());
  EXPECT_EQ(dr.request_id(), pr.request_id());
  EXPECT_EQ(dr.stopping().max_new_tokens(), static_cast<int32_t>(answer.size()));
  EXPECT_TRUE(decode.released_transfer_ids.empty());
}

TEST_F(GenerationServiceTest, ExplicitSeedAndIdsReachBothWorkers) {
  const std::vector<int32_t> answer = Encode(" hello there");
  // The transport's completion signal (binary) goes from prefill to decode.
  const std::string completion = std::string("TPE1") + '\0' + '\x01' + "binary";
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0], .kv_completion = completion});
  FakeDecodeWorker decode(DecodeScript{.tokens = std::vector<int32_t>(answer.begin() + 1, answer.end())});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  v1::GenerateRequest req;
  req.set_request_id("my-request");
  req.mutable_token_ids()->add_ids(5);
  req.mutable_token_ids()->add_ids(6);
  req.mutable_sampling()->set_seed(1234);
  req.mutable_stopping()->set_max_new_tokens(static_cast<int32_t>(answer.size()));
  Outcome o = Generate(req);
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.ids, answer);
  EXPECT_EQ(o.messages[0].request_id(), "my-request");
  EXPECT_EQ(prefill.prefills[0].seed(), 1234u);
  EXPECT_EQ(decode.decodes[0].seed(), 1234u);
  EXPECT_EQ(decode.decodes[0].kv_completion(), completion);
  EXPECT_EQ(prefill.prefills[0].prompt_token_ids_size(), 2);
  EXPECT_EQ(decode.reserves[0].request_id(), "my-request");
}

TEST_F(GenerationServiceTest, StopStringAcrossTokensEndsRequestAndCancelsDecode) {
  const std::string stop = "sat on";
  const std::vector<int32_t> answer = Encode(" the cat sat on the mat and then went away");
  for (int32_t id : answer) {
    ASSERT_EQ(Decode({id}).find(stop), std::string::npos) << "the stop string must span tokens";
  }
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  FakeDecodeWorker decode(DecodeScript{.tokens = std::vector<int32_t>(answer.begin() + 1, answer.end()),
                                       .hang_after_tokens = true});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  v1::GenerateRequest req = TextRequest("Story:", 100);
  req.mutable_stopping()->add_stop(stop);
  bool cancelled_once_finished = false;
  Outcome o = Generate(req, [&](grpc::ClientContext&, const v1::GenerateResponse& m) {
    // The router cancels decode itself, not through a deadline later on.
    if (m.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      cancelled_once_finished = decode.WaitFor([&] { return decode.decode_cancelled; });
    }
  });
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_TRUE(cancelled_once_finished) << "the decode call was not cancelled";
  const std::string full = Decode(answer);
  EXPECT_EQ(o.text, full.substr(0, full.find(stop)));
  EXPECT_EQ(o.last().finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(o.last().matched_stop(), stop);
  EXPECT_LT(o.ids.size(), answer.size());
}

TEST_F(GenerationServiceTest, OneTokenAnswerReleasesKvWithoutDecoding) {
  const int32_t token = Encode(" yes")[0];
  FakePrefillWorker prefill(PrefillScript{.first_token = token});
  FakeDecodeWorker decode(DecodeScript{});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  Outcome o = Generate(TextRequest("Question?", 1));
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  ASSERT_EQ(o.messages.size(), 1u);
  EXPECT_EQ(o.ids, std::vector<int32_t>{token});
  EXPECT_EQ(o.text, Decode({token}));
  EXPECT_EQ(o.last().finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(o.last().usage().completion_tokens(), 1);
  ASSERT_TRUE(decode.WaitFor([&] { return !decode.released_transfer_ids.empty(); }));
  EXPECT_EQ(decode.released_transfer_ids, decode.issued_transfer_ids);
  EXPECT_TRUE(decode.decodes.empty());
}

TEST_F(GenerationServiceTest, EosFromPrefillFinishesWithStopAndReleasesKv) {
  ASSERT_FALSE(ctx_.eos_ids.empty());
  FakePrefillWorker prefill(PrefillScript{.first_token = ctx_.eos_ids[0]});
  FakeDecodeWorker decode(DecodeScript{});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  v1::GenerateRequest req;
  req.set_text("Hi");
  Outcome o = Generate(req);
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.last().finish_reason(), v1::FINISH_REASON_STOP);
  ASSERT_TRUE(decode.WaitFor([&] { return decode.released_transfer_ids.size() == 1; }));
  EXPECT_TRUE(decode.decodes.empty());
}

TEST_F(GenerationServiceTest, InvalidRequestsAreRejectedBeforePlacement) {
  FakePrefillWorker prefill(PrefillScript{});
  FakeDecodeWorker decode(DecodeScript{});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  struct Case {
    std::string name;
    std::function<void(v1::GenerateRequest&)> edit;
    std::string message;
  };
  const int64_t vocab = ctx_.model.vocab_size;
  const std::vector<Case> cases = {
      {"no prompt", [](v1::GenerateRequest& r) { r.clear_text(); }, "no prompt"},
      {"empty prompt", [](v1::GenerateRequest& r) { r.mutable_token_ids(); }, "empty"},
      {"id outside vocab",
       [&](v1::GenerateRequest& r) { r.mutable_token_ids()->add_ids(static_cast<int32_t>(vocab)); }, "vocabulary"},
      {"negative temperature", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_temperature(-1); },
       "temperature"},
      {"top_p above 1", [](v1::GenerateRequest& r) { r.mutable_sampling()->set_top_p(1.5); }, "top_p"},
      {"too many logprobs", [](v1::GenerateRequest& r) { r.set_logprobs(21); }, "logprobs"},
      {"prompt as long as the context",
       [&](v1::GenerateRequest& r) {
         for (int64_t i = 0; i < ctx_.model.max_position_embeddings; ++i) r.mutable_token_ids()->add_ids(5);
       },
       "context"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest req = TextRequest("Hello", 4);
    c.edit(req);
    Outcome o = Generate(req);
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.name;
    EXPECT_THAT(o.status.error_message(), HasSubstr(c.message)) << c.name;
    EXPECT_TRUE(o.messages.empty()) << c.name;
  }
  EXPECT_TRUE(decode.reserves.empty());
  EXPECT_TRUE(prefill.prefills.empty());
}

TEST_F(GenerationServiceTest, NoDecodeWorkerIsUnavailable) {
  FakePrefillWorker prefill(PrefillScript{});
  RegisterPrefill(prefill);
  Outcome o = Generate(TextRequest("Hello", 4));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(o.status.error_message(), HasSubstr("no decode worker is available"));
  EXPECT_TRUE(prefill.prefills.empty());
}

TEST_F(GenerationServiceTest, ReservationRefusedEverywhereIsResourceExhausted) {
  const grpc::Status full(grpc::StatusCode::RESOURCE_EXHAUSTED, "3 KV blocks free, 5 needed");
  FakePrefillWorker prefill(PrefillScript{});
  FakeDecodeWorker a(DecodeScript{.reserve_status = full});
  FakeDecodeWorker b(DecodeScript{.reserve_status = full});
  FakeDecodeWorker c(DecodeScript{.reserve_status = full});
  RegisterDecode(a, 1000);
  RegisterDecode(b, 900);
  RegisterDecode(c, 800);
  RegisterPrefill(prefill);
  Outcome o = Generate(TextRequest("Hello", 4));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(o.status.error_message(), HasSubstr("out of capacity"));
  // The best worker, then the next-best once; never the same one twice.
  EXPECT_EQ(a.reserves.size(), 1u);
  EXPECT_EQ(b.reserves.size(), 1u);
  EXPECT_EQ(c.reserves.size(), 0u);
  EXPECT_TRUE(prefill.prefills.empty());
}

TEST_F(GenerationServiceTest, ReservationRefusedByBestWorkerGoesToNextBest) {
  const std::vector<int32_t> answer = Encode(" ok fine");
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  FakeDecodeWorker full(DecodeScript{.reserve_status = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "full")});
  FakeDecodeWorker roomy(DecodeScript{.tokens = std::vector<int32_t>(answer.begin() + 1, answer.end())});
  RegisterDecode(full, 1000);
  RegisterDecode(roomy, 500);
  RegisterPrefill(prefill);
  Outcome o = Generate(TextRequest("Hello", static_cast<int32_t>(answer.size())));
  ASSERT_TRUE(o.status.ok()) << o.status.error_message();
  EXPECT_EQ(o.ids, answer);
  EXPECT_EQ(o.last().decode_worker(), roomy.address());
  EXPECT_EQ(full.reserves.size(), 1u);
}

TEST_F(GenerationServiceTest, RequestNeedingMoreBlocksThanAnyWorkerHasIsResourceExhausted) {
  FakePrefillWorker prefill(PrefillScript{});
  FakeDecodeWorker decode(DecodeScript{});
  RegisterDecode(decode, 1);  // 16 slots; the request needs 17
  RegisterPrefill(prefill);
  v1::GenerateRequest req = TextRequest("", 4);
  for (int i = 0; i < 16; ++i) req.mutable_token_ids()->add_ids(5);
  Outcome o = Generate(req);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(o.status.error_message(), HasSubstr("needs 2 KV blocks"));
  EXPECT_TRUE(decode.reserves.empty());
}

TEST_F(GenerationServiceTest, PrefillFailureReleasesKvAndNamesNoAddress) {
  FakePrefillWorker prefill(PrefillScript{.status = grpc::Status(grpc::StatusCode::INTERNAL, "kernel exploded")});
  FakeDecodeWorker decode(DecodeScript{});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  Outcome o = Generate(TextRequest("Hello", 4));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::INTERNAL);
  // The client learns the phase, not the worker's address or its message
  // (both are in the router's log).
  EXPECT_THAT(o.status.error_message(), HasSubstr("prefill failed"));
  EXPECT_THAT(o.status.error_message(), Not(HasSubstr(prefill.address())));
  ASSERT_TRUE(decode.WaitFor([&] { return decode.released_transfer_ids.size() == 1; }));
  EXPECT_EQ(decode.released_transfer_ids, decode.issued_transfer_ids);
  EXPECT_TRUE(decode.decodes.empty());
  EXPECT_EQ(ModelInfo().prefill_workers(), 1);  // a failed call is not a dead worker
}

// One request's UNAVAILABLE from a worker that still answers is that
// request's failure: the worker stays in placement (issue 19, defect 1).
TEST_F(GenerationServiceTest, UnavailableFromALiveWorkerFailsOnlyThatRequest) {
  FakePrefillWorker prefill(PrefillScript{.status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "gone")});
  FakeDecodeWorker decode(DecodeScript{});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  Outcome o = Generate(TextRequest("Hello", 4));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(o.status.error_message(), Not(HasSubstr(prefill.address())));
  ASSERT_TRUE(decode.WaitFor([&] { return decode.released_transfer_ids.size() == 1; }));
  EXPECT_EQ(ModelInfo().prefill_workers(), 1);
}

TEST_F(GenerationServiceTest, ClientCancellationCancelsTheDecodeStream) {
  const std::vector<int32_t> answer = Encode(" one two three");
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  FakeDecodeWorker decode(DecodeScript{.tokens = {answer[1]}, .hang_after_tokens = true});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  int seen = 0;
  Outcome o = Generate(TextRequest("Count:", 100), [&](grpc::ClientContext& c, const v1::GenerateResponse& m) {
    seen += m.tokens_size();
    if (seen == 2) c.TryCancel();  // the prefill's token and one from decode
  });
  EXPECT_EQ(seen, 2);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(decode.WaitFor([&] { return decode.decode_cancelled; })) << "the decode call was not cancelled";
}

TEST_F(GenerationServiceTest, ClientCancellationDuringPrefillCancelsItAndReleasesKv) {
  FakePrefillWorker prefill(PrefillScript{.hang = true});
  FakeDecodeWorker decode(DecodeScript{});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  grpc::ClientContext c;
  std::thread canceller([&] {
    if (prefill.WaitFor([&] { return !prefill.prefills.empty(); })) c.TryCancel();
  });
  Outcome o = Generate(TextRequest("Hello", 8), nullptr, std::nullopt, &c);
  canceller.join();
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(prefill.WaitFor([&] { return prefill.cancelled; })) << "the prefill call was not cancelled";
  ASSERT_TRUE(decode.WaitFor([&] { return decode.released_transfer_ids.size() == 1; }));
  EXPECT_EQ(decode.released_transfer_ids, decode.issued_transfer_ids);
  EXPECT_TRUE(decode.decodes.empty());
}

TEST_F(GenerationServiceTest, ClientDeadlineReachesEveryWorkerCallAndEndsTheRequest) {
  const std::vector<int32_t> answer = Encode(" slow answer");
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  FakeDecodeWorker decode(DecodeScript{.tokens = {answer[1]}, .hang_after_tokens = true});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  const auto before = std::chrono::system_clock::now();
  Outcome o = Generate(TextRequest("Hello", 100), nullptr, std::chrono::milliseconds(800));
  const auto client_deadline = before + std::chrono::milliseconds(800);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(o.ids, std::vector<int32_t>({answer[0], answer[1]}));
  EXPECT_TRUE(decode.WaitFor([&] { return decode.decode_cancelled; }));
  // Each downstream call carried the client's deadline (not the router's
  // 30 s default), give or take scheduling.
  for (auto d : {decode.reserve_deadline, prefill.deadline, decode.decode_deadline}) {
    EXPECT_LT(std::chrono::abs(d - client_deadline), std::chrono::milliseconds(300));
  }
}

// A worker whose port refuses the liveness probe is gone: it leaves
// placement, and the client is not told its address.
TEST_F(GenerationServiceTest, DecodeWorkerDyingMidStreamIsUnavailableAndLeavesPlacement) {
  const std::vector<int32_t> answer = Encode(" half an answer");
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  auto decode = std::make_unique<FakeDecodeWorker>(DecodeScript{.tokens = {answer[1]}, .hang_after_tokens = true});
  const std::string address = decode->address();
  RegisterDecode(*decode);
  RegisterPrefill(prefill);
  int seen = 0;
  Outcome o = Generate(TextRequest("Hello", 100), [&](grpc::ClientContext&, const v1::GenerateResponse& m) {
    seen += m.tokens_size();
    if (seen == 2) decode->Kill();  // mid-stream, after one decode token
  });
  EXPECT_EQ(seen, 2);
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE) << o.status.error_message();
  EXPECT_THAT(o.status.error_message(), Not(HasSubstr(address)));
  EXPECT_EQ(ModelInfo().decode_workers(), 0);
}

TEST_F(GenerationServiceTest, RequestsBeyondTheInflightLimitWaitAndRunWhenASlotFrees) {
  ctx_.config.max_inflight_requests = 1;
  const std::vector<int32_t> answer = Encode(" waiting");
  FakePrefillWorker prefill(PrefillScript{.first_token = answer[0]});
  FakeDecodeWorker decode(DecodeScript{.hang_after_tokens = true});
  RegisterDecode(decode);
  RegisterPrefill(prefill);
  grpc::ClientContext first;
  std::thread holder([&] { Generate(TextRequest("Hello", 100), nullptr, std::nullopt, &first); });
  ASSERT_TRUE(decode.WaitFor([&] { return !decode.decodes.empty(); }));
  // The second waits in the queue while the first holds the only slot...
  grpc::ClientContext second_ctx;
  Outcome second;
  std::thread waiter([&] { second = Generate(TextRequest("Hello", 100), nullptr, std::nullopt, &second_ctx); });
  EXPECT_FALSE(decode.WaitFor([&] { return decode.decodes.size() > 1; }, std::chrono::milliseconds(300)));
  // ...and runs once the first ends.
  first.TryCancel();
  holder.join();
  EXPECT_TRUE(decode.WaitFor([&] { return decode.decodes.size() == 2; }));
  second_ctx.TryCancel();
  waiter.join();
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::CANCELLED) << second.status.error_message();
}

TEST_F(GenerationServiceTest, ModelInfoCountsRegisteredWorkers) {
  FakePrefillWorker prefill(PrefillScript{});
  FakeDecodeWorker a(DecodeScript{});
  FakeDecodeWorker b(DecodeScript{});
  RegisterDecode(a, 100);
  RegisterDecode(b, 50);
  RegisterPrefill(prefill);
  v1::ModelInfo info = ModelInfo();
  EXPECT_EQ(info.name(), "m");
  EXPECT_EQ(info.vocab_size(), ctx_.model.vocab_size);
  EXPECT_EQ(info.kv_block_size(), 16);
  EXPECT_EQ(info.kv_blocks_total(), 150);
  EXPECT_EQ(info.decode_workers(), 2);
  EXPECT_EQ(info.prefill_workers(), 1);
  ASSERT_EQ(info.eos_token_ids_size(), static_cast<int>(ctx_.eos_ids.size()));
}

TEST_F(GenerationServiceTest, TokenizeAndDetokenizeRoundTrip) {
  grpc::ClientContext c1;
  v1::TokenizeRequest tr;
  tr.set_text("Hello, world");
  tr.set_add_special_tokens(false);
  v1::TokenizeResponse tokens;
  ASSERT_TRUE(stub_->Tokenize(&c1, tr, &tokens).ok());
  EXPECT_EQ(std::vector<int32_t>(tokens.token_ids().begin(), tokens.token_ids().end()), Encode("Hello, world"));
  EXPECT_EQ(tokens.tokens_size(), tokens.token_ids_size());
  grpc::ClientContext c2;
  v1::DetokenizeRequest dr;
  *dr.mutable_token_ids() = tokens.token_ids();
  v1::DetokenizeResponse text;
  ASSERT_TRUE(stub_->Detokenize(&c2, dr, &text).ok());
  EXPECT_EQ(text.text(), "Hello, world");
  grpc::ClientContext c3;
  dr.add_token_ids(static_cast<int32_t>(ctx_.model.vocab_size) + 5);
  EXPECT_EQ(stub_->Detokenize(&c3, dr, &text).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(GenerationServiceTest, RegistrationRefusesAnotherModelOrKvLayoutNamingTheField) {
  FakeDecodeWorker a(DecodeScript{});
  RegisterDecode(a);
  v1::WorkerInfo other_model = Info("127.0.0.1:1", v1::WORKER_ROLE_DECODE, 10);
  other_model.set_model_name("llama");
  grpc::Status s = Register(other_model);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("llama"));
  v1::WorkerInfo other_layout = Info("127.0.0.1:2", v1::WORKER_ROLE_PREFILL, 0);
  other_layout.mutable_kv_layout()->set_block_size(32);
  s = Register(other_layout);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("block_size"));
  EXPECT_EQ(ModelInfo().decode_workers(), 1);
  EXPECT_EQ(ModelInfo().prefill_workers(), 0);
}

}  // namespace
}  // namespace tandem::router
