// The router's OpenAI-compatible HTTP API against real processes, driven by
// cpp-httplib's client: HTTP gives the gRPC API's tokens, streaming chunks
// add up to the non-streaming answer, n and stop strings, OpenAI-shaped
// errors with their statuses (400, 401, 404, 429, 503), and a client that
// goes away mid-stream leaves no KV block in use.
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/chat_template/chat_template.h"
#include "common/default_model/default_model.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

using nlohmann::json;
using testing::RequestSpec;

std::string FileText(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// An HTTP client of the router: https with the cluster CA and the api
// token in TLS mode (TANDEM_TEST_TLS=1), plain http otherwise.
std::unique_ptr<httplib::Client> HttpClient(const std::string& address, const SecurityOptions& security,
                                            bool with_token = true) {
  const bool tls = !security.tls_cert_file.empty();
  auto c = std::make_unique<httplib::Client>(absl::StrCat(tls ? "https://" : "http://", address));
  if (tls) c->set_ca_cert_path(security.tls_client_ca_file.c_str());
  const std::string token = !security.api_token.empty() ? security.api_token
                            : security.api_token_file.empty() ? ""
                                                              : FileText(security.api_token_file);
  if (with_token && !token.empty()) c->set_bearer_token_auth(token.c_str());
  c->set_read_timeout(60, 0);
  return c;
}

struct Posted {
  int status = 0;
  json body;
};

Posted PostJson(httplib::Client& c, const std::string& path, const json& body) {
  httplib::Result r = c.Post(path.c_str(), body.dump(), "application/json");
  if (!r) return {-1, json()};
  return {r->status, json::parse(r->body, nullptr, false)};
}

// The `data:` payloads of an SSE body, [DONE] included.
std::vector<std::string> SseData(const std::string& body) {
  std::vector<std::string> out;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::StartsWith(line, "data: ")) out.emplace_back(line.substr(6));
  }
  return out;
}

void ExpectOpenAiError(const Posted& p, int status) {
  EXPECT_EQ(p.status, status) << p.body.dump();
  ASSERT_TRUE(p.body.is_object() && p.body.contains("error")) << p.body.dump();
  EXPECT_TRUE(p.body["error"]["message"].is_string());
  EXPECT_TRUE(p.body["error"]["type"].is_string());
  EXPECT_TRUE(p.body["error"].contains("param"));
  EXPECT_TRUE(p.body["error"].contains("code"));
}

class HttpApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    logs_ = new testing::TempDir();
    ASSERT_TRUE(WriteDefaultModel(dir_->str()).ok());
    LocalClusterOptions o;
    o.security = testing::TestSecurity();
    o.model_dir = dir_->str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_->str();
    o.router_args = {"--served_model_name=tiny-test"};
    o.decode_args = {"--num_threads=1"};
    o.prefill_args = {"--num_threads=1"};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = c->release();
    auto t = Tokenizer::FromDir(dir_->str());
    ASSERT_TRUE(t.ok());
    tokenizer_ = t->release();
  }
  static void TearDownTestSuite() {
    if (cluster_ != nullptr) {
      EXPECT_TRUE(testing::WaitForNoUsedBlocks(cluster_->decode_addresses(), cluster_->prefill_addresses()).ok());
      EXPECT_TRUE(cluster_->Stop().ok());
      delete cluster_;
    }
    delete tokenizer_;
    delete dir_;
    delete logs_;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    ASSERT_FALSE(cluster_->router_http_address().empty());
    http_ = HttpClient(cluster_->router_http_address(), testing::TestSecurity());
  }

  static inline testing::TempDir* dir_ = nullptr;
  static inline testing::TempDir* logs_ = nullptr;
  static inline LocalCluster* cluster_ = nullptr;
  static inline Tokenizer* tokenizer_ = nullptr;
  std::unique_ptr<httplib::Client> http_;
};

TEST_F(HttpApiTest, ModelsAndHealth) {
  httplib::Result models = http_->Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(models->status, 200);
  json m = json::parse(models->body);
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "tiny-test");
  httplib::Result health = http_->Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  // The gRPC API names the model the same way.
  auto stub = testing::RouterStub(cluster_->router_address());
  grpc::ClientContext ctx;
  v1::ModelInfo info;
  ASSERT_TRUE(stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.name(), "tiny-test");
}

TEST_F(HttpApiTest, CompletionTokensEqualTheGrpcApis) {
  auto stub = testing::RouterStub(cluster_->router_address());
  for (const auto& [temperature, seed] : std::vector<std::pair<float, int>>{{0.0f, -1}, {0.8f, 7}}) {
    RequestSpec spec;
    spec.prompt = "Once upon a time";
    spec.max_new_tokens = 12;
    spec.temperature = temperature;
    spec.seed = seed;
    testing::StreamResult grpc = testing::StreamGenerate(*stub, testing::ToGenerateRequest(spec));
    ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
    json body = {{"model", "tiny-test"}, {"prompt", spec.prompt}, {"max_tokens", 12}, {"temperature", temperature},
                 {"ignore_eos", true}, {"skip_special_tokens", false}, {"logprobs", 0}};
    if (seed >= 0) body["seed"] = seed;
    Posted p = PostJson(*http_, "/v1/completions", body);
    ASSERT_EQ(p.status, 200) << p.body.dump();
    EXPECT_EQ(p.body["object"], "text_completion");
    EXPECT_EQ(p.body["model"], "tiny-test");
    const json& choice = p.body["choices"][0];
    EXPECT_EQ(choice["text"], grpc.text);
    EXPECT_EQ(choice["finish_reason"], "length");
    EXPECT_EQ(p.body["usage"]["completion_tokens"], 12);
    // Token by token: the logprobs' tokens are the gRPC ids' texts.
    ASSERT_EQ(choice["logprobs"]["tokens"].size(), grpc.tokens.size());
    for (size_t i = 0; i < grpc.tokens.size(); ++i) {
      const int32_t id = grpc.tokens[i];
      EXPECT_EQ(choice["logprobs"]["tokens"][i], SanitizeUtf8(tokenizer_->Decode(std::span<const int32_t>(&id, 1), false)))
          << i;
      EXPECT_LE(choice["logprobs"]["token_logprobs"][i].get<double>(), 0.0);
    }
  }
}

TEST_F(HttpApiTest, StreamingChunksAddUpToTheAnswer) {
  const json base = {{"prompt", "The little dog"}, {"max_tokens", 10}, {"temperature", 0}, {"ignore_eos", true}};
  Posted whole = PostJson(*http_, "/v1/completions", base);
  ASSERT_EQ(whole.status, 200) << whole.body.dump();
  json streamed = base;
  streamed["stream"] = true;
  streamed["stream_options"] = {{"include_usage", true}};
  httplib::Result r = http_->Post("/v1/completions", streamed.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_NE(r->get_header_value("Content-Type").find("text/event-stream"), std::string::npos);
  std::vector<std::string> data = SseData(r->body);
  ASSERT_GE(data.size(), 3u);
  EXPECT_EQ(data.back(), "[DONE]");
  std::string text;
  std::string finish;
  for (size_t i = 0; i + 2 < data.size(); ++i) {
    json chunk = json::parse(data[i]);
    EXPECT_EQ(chunk["object"], "text_completion");
    EXPECT_TRUE(chunk["usage"].is_null());
    text += chunk["choices"][0]["text"].get<std::string>();
    if (!chunk["choices"][0]["finish_reason"].is_null()) finish = chunk["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, whole.body["choices"][0]["text"]);
  EXPECT_EQ(finish, "length");
  json usage = json::parse(data[data.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"], whole.body["usage"]);
}

TEST_F(HttpApiTest, SeveralChoicesAndStopStrings) {
  Posted two = PostJson(*http_, "/v1/completions",
                        {{"prompt", "Hello"}, {"max_tokens", 6}, {"n", 2}, {"temperature", 1.0}, {"seed", 3}});
  ASSERT_EQ(two.status, 200) << two.body.dump();
  ASSERT_EQ(two.body["choices"].size(), 2u);
  EXPECT_EQ(two.body["choices"][0]["index"], 0);
  EXPECT_EQ(two.body["choices"][1]["index"], 1);
  // Seeded: the same request gives the same choices.
  Posted again = PostJson(*http_, "/v1/completions",
                          {{"prompt", "Hello"}, {"max_tokens", 6}, {"n", 2}, {"temperature", 1.0}, {"seed", 3}});
  EXPECT_EQ(again.body["choices"], two.body["choices"]);

  // A stop string taken from the greedy answer ends the answer before it.
  Posted greedy = PostJson(*http_, "/v1/completions",
                           {{"prompt", "Hello"}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}});
  ASSERT_EQ(greedy.status, 200);
  const std::string full = greedy.body["choices"][0]["text"];
  ASSERT_GE(full.size(), 4u);
  const std::string stop = full.substr(full.size() / 2, 2);
  Posted stopped = PostJson(*http_, "/v1/completions",
                            {{"prompt", "Hello"}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true},
                             {"stop", json::array({stop})}});
  ASSERT_EQ(stopped.status, 200);
  EXPECT_EQ(stopped.body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(stopped.body["choices"][0]["text"], full.substr(0, full.find(stop)));
}

TEST_F(HttpApiTest, ErrorsAreOpenAiShapedWithTheirStatus) {
  httplib::Result bad_json = http_->Post("/v1/completions", "{not json", "application/json");
  ASSERT_TRUE(bad_json);
  ExpectOpenAiError({bad_json->status, json::parse(bad_json->body, nullptr, false)}, 400);
  Posted zero = PostJson(*http_, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 0}});
  ExpectOpenAiError(zero, 400);
  EXPECT_EQ(zero.body["error"]["param"], "max_tokens");
  // Ranges are the router's own rules, applied to HTTP and gRPC alike.
  ExpectOpenAiError(PostJson(*http_, "/v1/completions", {{"prompt", "x"}, {"temperature", -1}}), 400);
  ExpectOpenAiError(PostJson(*http_, "/v1/completions", {{"prompt", json::array({1 << 24})}}), 400);
  Posted model = PostJson(*http_, "/v1/completions", {{"model", "gpt-4"}, {"prompt", "x"}});
  ExpectOpenAiError(model, 404);
  EXPECT_EQ(model.body["error"]["code"], "model_not_found");
  ExpectOpenAiError(PostJson(*http_, "/v1/nothing", json::object()), 404);
  // The built-in model has no chat template.
  Posted chat = PostJson(*http_, "/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}});
  ExpectOpenAiError(chat, 400);
  EXPECT_NE(chat.body["error"]["message"].get<std::string>().find("chat template"), std::string::npos);
  // Streaming requests refused before any token keep their status.
  ExpectOpenAiError(PostJson(*http_, "/v1/completions", {{"prompt", "x"}, {"temperature", -1}, {"stream", true}}),
                    400);
}

// Chat over a model whose tokenizer_config.json has a chat template: the
// rendered conversation (with the template's BOS, none added again) is
// the prompt, the same tokens as the gRPC API on that text.
class HttpChatTest : public ::testing::Test {
 protected:
  static constexpr char kTemplate[] =
      "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
      "{% if add_generation_prompt %}assistant:{% endif %}";
  void SetUp() override {
    ASSERT_TRUE(testing::WriteDefaultModelWithChatTemplate(dir_.str(), kTemplate).ok());
    absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(dir_.str());
    if (t.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << "chat template renderer not built";
    ASSERT_TRUE(t.ok()) << t.status();
    bos_ = t->bos_token();
    LocalClusterOptions o;
    o.security = testing::TestSecurity();
    o.model_dir = dir_.str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_.str();
    o.num_prefill = 0;
    o.num_decode = 0;
    o.num_aggregated = 1;
    o.aggregated_args = {"--num_threads=1"};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }
  void TearDown() override {
    if (cluster_ != nullptr) {
      EXPECT_TRUE(testing::WaitForNoUsedBlocks(cluster_->aggregated_addresses(), {}).ok());
    }
  }
  testing::TempDir dir_, logs_;
  std::unique_ptr<LocalCluster> cluster_;
  std::string bos_;
};

TEST_F(HttpChatTest, TemplateRenderedPromptStreamedAndNot) {
  auto http = HttpClient(cluster_->router_http_address(), testing::TestSecurity());
  const json body = {{"messages", {{{"role", "user"}, {"content", "Hi there"}}}},
                     {"max_completion_tokens", 10},
                     {"temperature", 0},
                     {"ignore_eos", true},
                     {"skip_special_tokens", false}};
  Posted whole = PostJson(*http, "/v1/chat/completions", body);
  ASSERT_EQ(whole.status, 200) << whole.body.dump();
  EXPECT_EQ(whole.body["object"], "chat.completion");
  EXPECT_EQ(whole.body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(whole.body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole.body["usage"]["completion_tokens"], 10);

  // The gRPC API on the rendered text, special tokens not added again.
  RequestSpec spec;
  spec.prompt = bos_ + "user: Hi there\nassistant:";
  spec.max_new_tokens = 10;
  v1::GenerateRequest req = testing::ToGenerateRequest(spec);
  req.set_add_special_tokens(false);
  auto stub = testing::RouterStub(cluster_->router_address());
  testing::StreamResult grpc = testing::StreamGenerate(*stub, req);
  ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
  EXPECT_EQ(whole.body["choices"][0]["message"]["content"], grpc.text);
  // No BOS added to the template's own.
  auto tokenizer = Tokenizer::FromDir(dir_.str());
  ASSERT_TRUE(tokenizer.ok());
  EXPECT_EQ(whole.body["usage"]["prompt_tokens"], (*tokenizer)->Encode(spec.prompt, false).size());

  json streamed = body;
  streamed["stream"] = true;
  httplib::Result r = http->Post("/v1/chat/completions", streamed.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::vector<std::string> data = SseData(r->body);
  ASSERT_GE(data.size(), 2u);
  EXPECT_EQ(data.back(), "[DONE]");
  std::string content;
  for (size_t i = 0; i + 1 < data.size(); ++i) {
    json chunk = json::parse(data[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    const json& delta = chunk["choices"][0]["delta"];
    EXPECT_EQ(delta.contains("role"), i == 0) << i;
    if (delta.contains("content")) content += delta["content"].get<std::string>();
  }
  EXPECT_EQ(content, whole.body["choices"][0]["message"]["content"]);
}

// A cluster of one aggregated worker that runs one request at a time and
// queues none, and a bearer token on the API.
class HttpLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The dropped HTTPS stream (TLS mode): OpenSSL writes on a closed
    // socket raise SIGPIPE in this client too.
    signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(WriteDefaultModel(dir_.str()).ok());
    LocalClusterOptions o;
    o.security = testing::TestSecurity();
    if (o.security.api_token_file.empty()) o.security.api_token = "http-test-token";
    o.model_dir = dir_.str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_.str();
    o.num_prefill = 0;
    o.num_decode = 0;
    o.num_aggregated = 1;
    o.router_args = {"--max_inflight_requests=1", "--max_queued_requests=0", "--report_interval_seconds=0.1",
                     "--liveness_timeout_seconds=0.5"};
    o.aggregated_args = {"--num_threads=1"};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    security_ = o.security;
  }

  testing::TempDir dir_, logs_;
  std::unique_ptr<LocalCluster> cluster_;
  SecurityOptions security_;
};

TEST_F(HttpLimitsTest, TokenFullQueueDisconnectAndNoWorker) {
  auto http = HttpClient(cluster_->router_http_address(), security_);
  auto anonymous = HttpClient(cluster_->router_http_address(), security_, /*with_token=*/false);
  const json ok_body = {{"prompt", "Hi"}, {"max_tokens", 2}};
  ExpectOpenAiError(PostJson(*anonymous, "/v1/completions", ok_body), 401);
  ExpectOpenAiError(PostJson(*http, "/v1/models", json::object()), 404);  // POST: no such route
  httplib::Result health = anonymous->Get("/health");  // probes carry no token
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  ASSERT_EQ(PostJson(*http, "/v1/completions", ok_body).status, 200);

  // A long streaming request holds the one slot; the client drops it after
  // its first chunk, once a second request was refused.
  std::atomic<bool> got_chunk{false}, refused_seen{false};
  std::thread streamer([&] {
    auto c = HttpClient(cluster_->router_http_address(), security_);
    json body = {{"prompt", "Once upon a time"}, {"max_tokens", 100000}, {"ignore_eos", true}, {"stream", true}};
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.body = body.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      got_chunk = true;
      while (!refused_seen) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return false;  // disconnect mid-stream
    };
    c->send(req);
  });
  while (!got_chunk) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  Posted full = PostJson(*http, "/v1/completions", ok_body);
  refused_seen = true;
  streamer.join();
  ExpectOpenAiError(full, 429);
  // The dropped stream's call is cancelled (not run to its end) and its
  // KV freed.
  double cancelled = 0;
  for (const absl::Time until = absl::Now() + absl::Seconds(5); cancelled < 1 && absl::Now() < until;) {
    absl::StatusOr<std::string> m = testing::HttpGet(cluster_->metrics_addresses()[0], "/metrics");
    if (m.ok()) cancelled = testing::SumMetric(*m, "tandem_requests_total", {"outcome=\"cancelled\""});
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(cancelled, 1);
  EXPECT_TRUE(testing::WaitForNoUsedBlocks(cluster_->aggregated_addresses(), {}).ok());
  ASSERT_EQ(PostJson(*http, "/v1/completions", ok_body).status, 200);

  // No worker left: not ready, and requests are 503.
  ASSERT_TRUE(cluster_->Terminate("aggregated0").ok());
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  int status = 0;
  while (absl::Now() < give_up) {
    httplib::Result h = anonymous->Get("/health");
    status = h ? h->status : -1;
    if (status == 503) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status, 503);
  ExpectOpenAiError(PostJson(*http, "/v1/completions", ok_body), 503);
}

}  // namespace
}  // namespace tandem
