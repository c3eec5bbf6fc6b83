// The serving scheduler (issue 18) end to end, with real processes on
// loopback: an aggregated worker, a mix of aggregated and disaggregated
// workers, chunked prefill on both sides of a transfer and conditional
// disaggregation all give the tokens of the single-process engine
// (`tandem generate` / LocalGenerator, bit-exact on CPU); and a burst of
// 1000 requests at once is served with none refused (the router queues
// past its in-flight limit) and leaves no KV block in use. Every test ends
// by checking that no worker holds a KV block.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "common/engine/local_generator.h"
#include "common/engine/model_loader.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_logs_test.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

using testing::RequestSpec;
using testing::StreamResult;

class ServingTest : public testing::ClusterLogsTest {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new testing::TempDir();
    ASSERT_TRUE(WriteTestModel(model_dir_->str()).ok());
    auto m = LoadModel(ModelSource{model_dir_->str(), false, 0});
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = new LoadedModel(std::move(*m));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete model_dir_;
  }

  std::unique_ptr<LocalCluster> StartCluster(LocalClusterOptions o) {
    o.model_dir = model_dir_->str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_.str();
    o.security = testing::TestSecurity();
    for (auto* args : {&o.prefill_args, &o.decode_args, &o.aggregated_args}) args->push_back("--num_threads=1");
    auto c = LocalCluster::Start(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Every worker that holds KV: decode and aggregated ones answer
  // DecodeService.GetLoad.
  static std::vector<std::string> DecodeSide(const LocalCluster& c) {
    std::vector<std::string> all = c.decode_addresses();
    all.insert(all.end(), c.aggregated_addresses().begin(), c.aggregated_addresses().end());
    return all;
  }

  // Checks no block is in use anywhere, then that every process exits 0.
  static void StopCluster(std::unique_ptr<LocalCluster> c, absl::Duration within = absl::Seconds(10)) {
    absl::Status none = testing::WaitForNoUsedBlocks(DecodeSide(*c), c->prefill_addresses(), within);
    EXPECT_TRUE(none.ok()) << none;
    absl::Status s = c->Stop();
    EXPECT_TRUE(s.ok()) << s;
  }

  // One thread per request (small sets).
  static std::vector<StreamResult> RunConcurrently(const std::string& router,
                                                   const std::vector<v1::GenerateRequest>& reqs) {
    std::vector<StreamResult> out(reqs.size());
    std::vector<std::thread> threads;
    auto stub = testing::RouterStub(router);
    for (size_t i = 0; i < reqs.size(); ++i) {
      threads.emplace_back([&, i] { out[i] = testing::StreamGenerate(*stub, reqs[i]); });
    }
    for (auto& t : threads) t.join();
    return out;
  }

  // The monolithic tokens, computed here by the engine `tandem generate`
  // runs (LocalGenerator), for prompts given as ids.
  static std::vector<std::vector<int32_t>> LocalTokens(const std::vector<GenerationRequest>& reqs) {
    BackendOptions bo;
    bo.num_threads = 1;
    auto backend = CreateBackend(*model_, bo);
    EXPECT_TRUE(backend.ok()) << backend.status();
    Engine engine(std::move(*backend));
    LocalGenerator generator(engine, *model_->tokenizer);
    std::vector<std::vector<int32_t>> want(reqs.size());
    EXPECT_TRUE(generator.Run(reqs, [&](const GenerationEvent& e) {
                           if (e.token >= 0) want[e.request].push_back(e.token);
                         }).ok());
    return want;
  }

  // A prompt of exactly `n` token ids, and the same request for the
  // router and for LocalGenerator.
  struct Case {
    v1::GenerateRequest proto;
    GenerationRequest local;
  };
  static Case IdsCase(int n, int salt, int max_new, float temperature = 0.0f, int64_t seed = 1) {
    Case c;
    const int32_t vocab = static_cast<int32_t>(model_->config.vocab_size);
    for (int i = 0; i < n; ++i) {
      const int32_t id = static_cast<int32_t>((i * 31 + salt * 89 + 3) % (vocab - 1)) + 1;
      c.local.prompt.push_back(id);
      c.proto.mutable_token_ids()->add_ids(id);
    }
    c.local.sampling.temperature = temperature;
    c.local.sampling.seed = static_cast<uint64_t>(seed);
    c.local.stopping.max_new_tokens = max_new;
    c.local.stopping.ignore_eos = true;
    c.proto.mutable_sampling()->set_temperature(temperature);
    c.proto.mutable_sampling()->set_seed(static_cast<uint64_t>(seed));
    c.proto.mutable_stopping()->set_max_new_tokens(max_new);
    c.proto.mutable_stopping()->set_ignore_eos(true);
    return c;
  }

  // Runs `cases` concurrently and checks every one against LocalGenerator.
  static std::vector<StreamResult> RunAndCompare(const LocalCluster& cluster, const std::vector<Case>& cases) {
    std::vector<v1::GenerateRequest> reqs;
    std::vector<GenerationRequest> local;
    for (const Case& c : cases) {
      reqs.push_back(c.proto);
      local.push_back(c.local);
    }
    const auto want = LocalTokens(local);
    std::vector<StreamResult> got = RunConcurrently(cluster.router_address(), reqs);
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(got[i].status.ok()) << "request " << i << ": " << got[i].status.error_message();
      EXPECT_EQ(got[i].tokens, want[i]) << "request " << i << " (" << local[i].prompt.size() << " prompt tokens)";
      EXPECT_EQ(want[i].size(), static_cast<size_t>(local[i].stopping.max_new_tokens));
    }
    return got;
  }

  static testing::TempDir* model_dir_;
  static LoadedModel* model_;
};

testing::TempDir* ServingTest::model_dir_ = nullptr;
LoadedModel* ServingTest::model_ = nullptr;

const std::vector<std::string> kPrompts = {
    "The quick brown fox", "Once upon a time in a land far away, there lived",
    "def fibonacci(n):", "Tokens stream from the aggregated worker to the router",
    "A much longer prompt that the aggregated worker has to prefill in several chunks of sixteen tokens "
    "while it keeps decoding the shorter requests that arrived with it, one token per step each"};

// Only an aggregated worker: it prefills (in chunks of 16, mixed into its
// decode steps) and decodes every request itself; tokens equal the CLI's.
TEST_F(ServingTest, AnAggregatedWorkerGivesTheTokensOfTandemGenerate) {
  LocalClusterOptions o;
  o.num_prefill = 0;
  o.num_decode = 0;
  o.num_aggregated = 1;
  o.aggregated_args = {"--max_chunk_tokens=16"};
  auto cluster = StartCluster(o);
  ASSERT_NE(cluster, nullptr);
  RequestSpec greedy;
  greedy.max_new_tokens = 10;
  RequestSpec seeded = greedy;
  seeded.temperature = 0.9f;
  seeded.top_p = 0.95f;
  seeded.top_k = 50;
  seeded.seed = 1234;
  std::vector<v1::GenerateRequest> reqs;
  std::vector<std::vector<int32_t>> want;
  for (const RequestSpec& spec : {greedy, seeded}) {
    const auto tokens = testing::MonolithicTokens(model_dir_->str(), spec, kPrompts);
    for (size_t i = 0; i < kPrompts.size(); ++i) {
      ASSERT_EQ(tokens[i].size(), 10u) << "the CLI failed";
      RequestSpec s = spec;
      s.prompt = kPrompts[i];
      reqs.push_back(testing::ToGenerateRequest(s));
      want.push_back(tokens[i]);
    }
  }
  std::vector<StreamResult> got = RunConcurrently(cluster->router_address(), reqs);
  const std::string worker = cluster->aggregated_addresses()[0];
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_TRUE(got[i].status.ok()) << i << ": " << got[i].status.error_message();
    EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
    EXPECT_EQ(got[i].finish_reason, v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(got[i].prefill_worker, worker);
    EXPECT_EQ(got[i].decode_worker, worker);
  }
  StopCluster(std::move(cluster));
}

// 1 prefill + 1 decode + 1 aggregated: the router places on both kinds
// (by headroom), and each request's tokens are the monolithic ones
// whichever path served it.
TEST_F(ServingTest, AMixedClusterGivesMonolithicTokensOnEitherPath) {
  LocalClusterOptions o;
  o.num_prefill = 1;
  o.num_decode = 1;
  o.num_aggregated = 1;
  auto cluster = StartCluster(o);
  ASSERT_NE(cluster, nullptr);
  std::vector<Case> cases;
  for (int i = 0; i < 16; ++i) cases.push_back(IdsCase(10 + 9 * i, i, 12, i % 2 ? 0.8f : 0.0f, 50 + i));
  std::vector<StreamResult> got = RunAndCompare(*cluster, cases);
  int aggregated = 0, disaggregated = 0;
  for (const StreamResult& r : got) {
    if (r.prefill_worker == cluster->aggregated_addresses()[0]) {
      EXPECT_EQ(r.decode_worker, r.prefill_worker);
      ++aggregated;
    } else {
      EXPECT_EQ(r.prefill_worker, cluster->prefill_addresses()[0]);
      EXPECT_EQ(r.decode_worker, cluster->decode_addresses()[0]);
      ++disaggregated;
    }
  }
  EXPECT_GT(aggregated, 0) << "no request went to the aggregated worker";
  EXPECT_GT(disaggregated, 0) << "no request went through prefill -> decode";
  StopCluster(std::move(cluster));
}

// Disaggregated == monolithic with chunked prefill on the prefill worker
// (chunks of 1, 7, 64 tokens; prompts of 100-300 tokens, one ending on a
// block boundary) and the same flag on the decode worker.
class ChunkedServingTest : public ServingTest, public ::testing::WithParamInterface<int> {};

TEST_P(ChunkedServingTest, DisaggregatedEqualsMonolithicWithChunkedPrefill) {
  const std::string chunk = absl::StrCat("--max_chunk_tokens=", GetParam());
  LocalClusterOptions o;
  o.prefill_args = {chunk};
  o.decode_args = {chunk};
  auto cluster = StartCluster(o);
  ASSERT_NE(cluster, nullptr);
  std::vector<Case> cases = {IdsCase(100, 1, 8), IdsCase(160, 2, 8, 0.9f, 77), IdsCase(233, 3, 8),
                             IdsCase(300, 4, 8, 0.7f, 78)};
  for (const StreamResult& r : RunAndCompare(*cluster, cases)) {
    EXPECT_EQ(r.prefill_worker, cluster->prefill_addresses()[0]);
  }
  StopCluster(std::move(cluster));
}

INSTANTIATE_TEST_SUITE_P(ChunkTokens, ChunkedServingTest, ::testing::Values(1, 7, 64));

// Router --local_prefill_max_tokens=64: a shorter prompt is prefilled by
// the decode worker itself, a longer one goes through the prefill worker.
TEST_F(ServingTest, ConditionalDisaggregationPrefillsShortPromptsOnTheDecodeWorker) {
  LocalClusterOptions o;
  o.router_args = {"--local_prefill_max_tokens=64"};
  auto cluster = StartCluster(o);
  ASSERT_NE(cluster, nullptr);
  std::vector<Case> cases = {IdsCase(20, 5, 10), IdsCase(63, 6, 10, 0.8f, 9), IdsCase(64, 7, 10),
                             IdsCase(200, 8, 10, 0.8f, 10)};
  std::vector<StreamResult> got = RunAndCompare(*cluster, cases);
  ASSERT_EQ(got.size(), 4u);
  const std::string decode = cluster->decode_addresses()[0], prefill = cluster->prefill_addresses()[0];
  for (int i : {0, 1}) {
    EXPECT_EQ(got[i].prefill_worker, decode) << "request " << i << " was not prefilled locally";
    EXPECT_EQ(got[i].decode_worker, decode);
  }
  for (int i : {2, 3}) {
    EXPECT_EQ(got[i].prefill_worker, prefill) << "request " << i << " was not disaggregated";
    EXPECT_EQ(got[i].decode_worker, decode);
  }
  StopCluster(std::move(cluster));
}

// 1000 streams held by one thread over one completion queue: the client
// must not be what limits a burst on a 2-core box.
std::vector<StreamResult> RunBurst(const std::string& router, const std::vector<v1::GenerateRequest>& reqs,
                                   absl::Duration deadline) {
  struct Call {
    enum State { kStarting, kReading, kFinishing } state = kStarting;
    grpc::ClientContext ctx;
    v1::GenerateResponse resp;
    std::unique_ptr<grpc::ClientAsyncReader<v1::GenerateResponse>> reader;
    StreamResult* out = nullptr;
  };
  std::vector<StreamResult> out(reqs.size());
  auto stub = testing::RouterStub(router);
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<Call>> calls;
  // No gRPC deadline on the calls: with one, the router may refuse a
  // queued request whose deadline its completion-rate estimate says cannot
  // be met, and the burst's early rate (every process starting ~1000
  // threads) is far below the steady one. A watchdog cancels whatever is
  // left at `deadline` instead, so the test stays bounded.
  const absl::Time until = absl::Now() + deadline;
  bool cancelled = false;
  for (size_t i = 0; i < reqs.size(); ++i) {
    auto c = std::make_unique<Call>();
    c->out = &out[i];
    c->reader = stub->PrepareAsyncGenerate(&c->ctx, reqs[i], &cq);
    c->reader->StartCall(c.get());
    calls.push_back(std::move(c));
  }
  size_t done = 0;
  void* tag = nullptr;
  bool ok = false;
  while (done < calls.size()) {
    const auto next = cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    if (next == grpc::CompletionQueue::SHUTDOWN) break;
    if (next == grpc::CompletionQueue::TIMEOUT) {
      if (!cancelled && absl::Now() >= until) {
        for (auto& call : calls) call->ctx.TryCancel();
        cancelled = true;
      }
      continue;
    }
    Call* c = static_cast<Call*>(tag);
    switch (c->state) {
      case Call::kStarting:
      case Call::kReading:
        if (c->state == Call::kReading && ok) {
          for (const v1::GeneratedToken& t : c->resp.tokens()) c->out->tokens.push_back(t.id());
          if (c->resp.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
            c->out->finish_reason = c->resp.finish_reason();
            c->out->decode_worker = c->resp.decode_worker();
            c->out->prefill_worker = c->resp.prefill_worker();
          }
        }
        if (ok) {
          c->state = Call::kReading;
          c->reader->Read(&c->resp, c);
        } else {
          c->state = Call::kFinishing;
          c->reader->Finish(&c->out->status, c);
        }
        break;
      case Call::kFinishing:
        ++done;
        break;
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return out;
}

// Issue 18's burst: 1000 requests at once against a default cluster
// (what `tandem up` starts). The router runs up to its in-flight limit
// (from the workers' batch sizes) and queues the rest; none is refused,
// every one is served in full, and within 2 s of the last answer no worker
// holds a KV block.
//
// The default cluster on the CPU batches 64 sequences per worker, so the
// router runs 128 at a time and queues the rest: the burst costs the
// workers no more threads than a full batch.
TEST_F(ServingTest, ABurstOfAThousandRequestsIsServedWithNoneRefusedAndNoBlockLeft) {
  auto cluster = StartCluster(LocalClusterOptions{});
  ASSERT_NE(cluster, nullptr);
  constexpr int kRequests = 1000;
  std::vector<v1::GenerateRequest> reqs;
  for (int i = 0; i < kRequests; ++i) {
    RequestSpec s;
    s.prompt = absl::StrCat("burst ", i, " says hello");
    s.max_new_tokens = 4;
    if (i % 2) {
      s.temperature = 0.8f;
      s.seed = i;
    }
    reqs.push_back(testing::ToGenerateRequest(s));
  }
  const absl::Time start = absl::Now();
  std::vector<StreamResult> got = RunBurst(cluster->router_address(), reqs, absl::Seconds(150));
  const absl::Duration took = absl::Now() - start;
  int ok = 0, refused = 0;
  std::string first_error;
  for (const StreamResult& r : got) {
    if (r.status.ok() && r.tokens.size() == 4u && r.finish_reason == v1::FINISH_REASON_LENGTH) {
      ++ok;
    } else {
      if (r.status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) ++refused;
      if (first_error.empty()) {
        first_error = absl::StrCat(r.status.error_code(), ": ", r.status.error_message(), " (", r.tokens.size(),
                                   " tokens)");
      }
    }
  }
  EXPECT_EQ(refused, 0) << first_error;
  EXPECT_EQ(ok, kRequests) << first_error;
  std::printf("burst of %d: %d ok in %.2f s\n", kRequests, ok, absl::ToDoubleSeconds(took));
  // A sample of answers against the monolithic engine (the whole set would
  // double the test's time; equality under load is the other tests' job).
  std::vector<GenerationRequest> local;
  std::vector<size_t> sample;
  for (size_t i = 0; i < got.size(); i += 97) {
    sample.push_back(i);
    GenerationRequest g;
    g.prompt = model_->tokenizer->Encode(reqs[i].text(), true);
    g.sampling.temperature = reqs[i].sampling().temperature();
    if (reqs[i].sampling().has_seed()) g.sampling.seed = reqs[i].sampling().seed();
    g.stopping.max_new_tokens = 4;
    g.stopping.ignore_eos = true;
    local.push_back(g);
  }
  const auto want = LocalTokens(local);
  for (size_t k = 0; k < sample.size(); ++k) {
    EXPECT_EQ(got[sample[k]].tokens, want[k]) << "request " << sample[k];
  }
  StopCluster(std::move(cluster), absl::Seconds(2));
}

}  // namespace
}  // namespace tandem
