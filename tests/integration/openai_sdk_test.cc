// Issue 21's evidence: the official `openai` npm client against a real
// disaggregated cluster (router, prefill and decode workers on loopback).
// tests/js/openai_sdk_check.mjs drives chat and completions (streamed and
// not), n=2, stop strings, logprobs, a bad request and a stream it aborts
// mid-way, checking what the SDK alone can judge; this test then compares
// its seeded answers with the gRPC API's for the same requests, checks the
// abort was a cancel on the router, and that no KV block is left in use.
// TLS mode (TANDEM_TEST_TLS=1): https with the cluster CA given to node as
// NODE_EXTRA_CA_CERTS and the api token as the SDK's apiKey.
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/chat_template/chat_template.h"
#include "common/default_model/default_model.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/paths.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

using nlohmann::json;
using testing::RequestSpec;

// A minimal chat template, so that one model serves chat and completions.
constexpr char kTemplate[] =
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}";
constexpr char kModelName[] = "tiny-sdk";

std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// Single-quoted for sh.
std::string Quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

class OpenAiSdkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    js_dir_ = testing::SourceDir() + "/tests/js";
    if (!std::filesystem::exists(js_dir_ + "/node_modules/openai")) {
      GTEST_SKIP() << "the openai npm package is not installed: run `npm ci --prefix tests/js` (tools/setup.sh does)";
    }
    ASSERT_TRUE(testing::WriteDefaultModelWithChatTemplate(dir_.str(), kTemplate).ok());
    absl::StatusOr<ChatTemplate> t = ChatTemplate::FromModelDir(dir_.str());
    if (t.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << "chat template renderer not built";
    ASSERT_TRUE(t.ok()) << t.status();
    bos_ = t->bos_token();
    auto tokenizer = Tokenizer::FromDir(dir_.str());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = std::move(*tokenizer);

    LocalClusterOptions o;
    o.security = testing::TestSecurity();
    o.model_dir = dir_.str();
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_.str();
    o.router_args = {absl::StrCat("--served_model_name=", kModelName)};
    o.decode_args = {"--num_threads=1"};
    o.prefill_args = {"--num_threads=1"};
    auto c = LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    security_ = o.security;
  }
  void TearDown() override {
    if (cluster_ != nullptr) {
      // Every test that touches KV ends with no block in use.
      EXPECT_TRUE(testing::WaitForNoUsedBlocks(cluster_->decode_addresses(), cluster_->prefill_addresses()).ok());
    }
  }

  // Runs the node script; its JSON report, or a failure with its stderr.
  absl::StatusOr<json> RunSdkCheck() {
    const bool tls = !security_.tls_cert_file.empty();
    const std::string base_url =
        absl::StrCat(tls ? "https://" : "http://", cluster_->router_http_address(), "/v1");
    const std::string token = !security_.api_token.empty() ? security_.api_token
                              : security_.api_token_file.empty() ? ""
                                                                 : FirstLine(security_.api_token_file);
    const std::string out_path = out_.str() + "/sdk.json";
    const std::string err_path = out_.str() + "/sdk.stderr";
    std::string cmd;
    if (!token.empty()) absl::StrAppend(&cmd, "OPENAI_API_KEY=", Quoted(token), " ");
    if (tls) absl::StrAppend(&cmd, "NODE_EXTRA_CA_CERTS=", Quoted(security_.tls_client_ca_file), " ");
    absl::StrAppend(&cmd, "node ", Quoted(js_dir_ + "/openai_sdk_check.mjs"), " ", Quoted(base_url), " ",
                    Quoted(kModelName), " ", Quoted(out_path), " 2>", Quoted(err_path));
    const int rc = system(cmd.c_str());
    if (rc != 0) {
      return absl::InternalError(absl::StrCat("node exited ", rc, ": ", testing::ReadFile(err_path)));
    }
    json out = json::parse(testing::ReadFile(out_path), nullptr, false);
    if (!out.is_object()) return absl::InternalError("openai_sdk_check.mjs wrote no JSON report");
    return out;
  }

  // The gRPC API's answer to `prompt` with the script's seeded sampling.
  testing::StreamResult Grpc(const std::string& prompt, int max_new_tokens, bool add_special_tokens) {
    RequestSpec spec;
    spec.prompt = prompt;
    spec.max_new_tokens = max_new_tokens;
    spec.temperature = 0.8f;
    spec.seed = 7;
    v1::GenerateRequest req = testing::ToGenerateRequest(spec);
    req.set_add_special_tokens(add_special_tokens);
    auto stub = testing::RouterStub(cluster_->router_address());
    return testing::StreamGenerate(*stub, req);
  }

  // Each id's own text, as the HTTP API's logprobs name the tokens.
  std::vector<std::string> TokenTexts(const std::vector<int32_t>& ids) {
    std::vector<std::string> out;
    for (const int32_t id : ids) {
      out.push_back(SanitizeUtf8(tokenizer_->Decode(std::span<const int32_t>(&id, 1), false)));
    }
    return out;
  }

  std::string js_dir_;
  testing::TempDir dir_, logs_, out_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<LocalCluster> cluster_;
  SecurityOptions security_;
  std::string bos_;
};

TEST_F(OpenAiSdkTest, SdkGetsTheGrpcApisTokensAndAnAbortFreesItsBlocks) {
  absl::StatusOr<json> sdk = RunSdkCheck();
  ASSERT_TRUE(sdk.ok()) << sdk.status();

  // Completions: the same seeded request through gRPC gives the same text
  // and, token by token, the same ids.
  const json& completion = (*sdk)["completion"];
  testing::StreamResult grpc = Grpc(completion["prompt"], 12, /*add_special_tokens=*/true);
  ASSERT_TRUE(grpc.status.ok()) << grpc.status.error_message();
  EXPECT_EQ(completion["text"], grpc.text);
  EXPECT_EQ(completion["tokens"].get<std::vector<std::string>>(), TokenTexts(grpc.tokens));

  // Chat: the gRPC API on the template's rendering, its BOS not added again.
  const json& chat = (*sdk)["chat"];
  testing::StreamResult grpc_chat =
      Grpc(absl::StrCat(bos_, "user: ", chat["user"].get<std::string>(), "\nassistant:"), 10, false);
  ASSERT_TRUE(grpc_chat.status.ok()) << grpc_chat.status.error_message();
  EXPECT_EQ(chat["text"], grpc_chat.text);
  EXPECT_EQ(chat["tokens"].get<std::vector<std::string>>(), TokenTexts(grpc_chat.tokens));

  EXPECT_EQ((*sdk)["bad_request"]["status"], 400);
  EXPECT_EQ((*sdk)["bad_request"]["param"], "max_tokens");
  // /v1/models carries the model's generation defaults (the built-in model
  // sets none: an empty object).
  EXPECT_TRUE((*sdk)["generation_defaults"].is_object()) << sdk->dump();

  // The aborted stream: the router counts it cancelled (not run to its
  // end), and its blocks come back (TearDown checks every worker).
  EXPECT_GE((*sdk)["aborted_after_chunks"].get<int>(), 1);
  double cancelled = 0;
  for (const absl::Time until = absl::Now() + absl::Seconds(5); cancelled < 1 && absl::Now() < until;) {
    absl::StatusOr<std::string> m = testing::HttpGet(cluster_->metrics_addresses()[0], "/metrics");
    if (m.ok()) cancelled = testing::SumMetric(*m, "tandem_requests_total", {"outcome=\"cancelled\""});
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(cancelled, 1);
  EXPECT_TRUE(testing::WaitForNoUsedBlocks(cluster_->decode_addresses(), cluster_->prefill_addresses(),
                                           absl::Seconds(5))
                  .ok());
}

}  // namespace
}  // namespace tandem
