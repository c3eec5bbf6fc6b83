// A cluster of real processes with mutual TLS, a cluster token and an api
// token (certificates made at test time by openssl): everything without
// the right credentials is refused (plaintext to a TLS port, a client
// certificate from another CA, wrong or wrong-case tokens, internal RPCs
// without the cluster credential), and with them it generates the same
// tokens as a plaintext cluster and as `tandem generate`.
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_certs.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;
using testing::RequestSpec;

constexpr char kApiToken[] = "Api-Token-0123";
constexpr char kClusterToken[] = "cluster-token-4567";

std::chrono::system_clock::time_point Soon() { return std::chrono::system_clock::now() + std::chrono::seconds(10); }

std::shared_ptr<grpc::Channel> MustDialPublic(const std::string& address, const PublicClientOptions& o) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> c = DialPublic(address, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

std::shared_ptr<const ClusterSecurity> MustLoad(const SecurityOptions& o) {
  absl::StatusOr<std::shared_ptr<const ClusterSecurity>> s = ClusterSecurity::Load(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return *s;
}

grpc::Status GetModelInfo(const std::shared_ptr<grpc::Channel>& channel, v1::ModelInfo* info = nullptr) {
  v1::ModelInfo unused;
  grpc::ClientContext ctx;
  ctx.set_deadline(Soon());
  return v1::GenerationService::NewStub(channel)->GetModelInfo(&ctx, v1::GetModelInfoRequest(),
                                                                info ? info : &unused);
}

grpc::Status RegisterWorker(const std::shared_ptr<grpc::Channel>& channel) {
  // A well-formed registration of a worker that does not exist: were it
  // accepted, the router would count a third worker.
  v1::WorkerInfo info;
  info.set_role(v1::WORKER_ROLE_DECODE);
  info.set_address("127.0.0.1:1");
  info.set_model_name("tandem-default");
  grpc::ClientContext ctx;
  ctx.set_deadline(Soon());
  v1::RegisterWorkerResponse resp;
  return v1::WorkerRegistry::NewStub(channel)->RegisterWorker(&ctx, info, &resp);
}

grpc::Status ReportLoad(const std::shared_ptr<grpc::Channel>& channel) {
  v1::LoadReport report;
  report.set_worker_id("decode-0");
  grpc::ClientContext ctx;
  ctx.set_deadline(Soon());
  v1::LoadReportResponse resp;
  return v1::WorkerRegistry::NewStub(channel)->ReportLoad(&ctx, report, &resp);
}

grpc::Status ReserveKv(const std::shared_ptr<grpc::Channel>& channel) {
  v1::ReserveKvRequest req;
  req.set_request_id("intruder");
  req.set_prompt_tokens(64);
  req.set_max_new_tokens(64);
  req.set_ttl_seconds(30);
  grpc::ClientContext ctx;
  ctx.set_deadline(Soon());
  v1::ReserveKvResponse resp;
  return v1::DecodeService::NewStub(channel)->ReserveKv(&ctx, req, &resp);
}

// A prefill worker's KV write hold (issue 19): pins a reservation's blocks.
grpc::Status HoldKvWrite(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext ctx;
  ctx.set_deadline(Soon());
  auto stream = v1::DecodeService::NewStub(channel)->HoldKvWrite(&ctx);
  v1::KvWriteHoldRequest req;
  req.set_transfer_id("intruder");
  req.add_dst_blocks(0);
  stream->Write(req);
  stream->WritesDone();
  v1::KvWriteHoldResponse resp;
  while (stream->Read(&resp)) {
  }
  return stream->Finish();
}

grpc::Status Prefill(const std::shared_ptr<grpc::Channel>& channel) {
  v1::PrefillRequest req;
  req.set_request_id("intruder");
  grpc::ClientContext ctx;
  ctx.set_deadline(Soon());
  v1::PrefillResponse resp;
  return v1::PrefillService::NewStub(channel)->Prefill(&ctx, req, &resp);
}

class TlsClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    logs_ = new testing::TempDir();
    ASSERT_TRUE(WriteTestModel(dir_->str() + "/model").ok());
    absl::StatusOr<testing::TestCerts> certs = testing::MakeTestCerts(dir_->str() + "/certs");
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = new testing::TestCerts(*certs);
    security_ = new SecurityOptions();
    security_->tls_cert_file = certs_->cert;
    security_->tls_key_file = certs_->key;
    security_->tls_client_ca_file = certs_->ca;
    security_->cluster_token_file = dir_->str() + "/cluster.token";
    security_->api_token_file = dir_->str() + "/api.token";
    std::ofstream(security_->cluster_token_file) << kClusterToken << "\n";
    std::ofstream(security_->api_token_file) << kApiToken << "\n";
    cluster_ = StartCluster(*security_, "secure").release();
    ASSERT_NE(cluster_, nullptr);
  }
  static void TearDownTestSuite() {
    if (cluster_ != nullptr) {
      EXPECT_TRUE(cluster_->Stop().ok());
      delete cluster_;
    }
    delete security_;
    delete certs_;
    delete dir_;
    delete logs_;
  }

  static std::unique_ptr<LocalCluster> StartCluster(const SecurityOptions& security, const std::string& name) {
    LocalClusterOptions o;
    o.model_dir = dir_->str() + "/model";
    o.bin_dir = testing::BinDir();
    o.log_dir = logs_->str() + "/" + name;
    std::filesystem::create_directories(o.log_dir);
    o.decode_args = {"--num_threads=1"};
    o.prefill_args = {"--num_threads=1"};
    o.security = security;
    auto c = LocalCluster::Start(o);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // A public client over TLS that trusts the cluster CA.
  static PublicClientOptions Client(std::string token) {
    return PublicClientOptions{.tls = true, .ca_file = certs_->ca, .token = std::move(token)};
  }
  // The cluster's certificate without the cluster token.
  static std::shared_ptr<const ClusterSecurity> CertificateOnly() {
    SecurityOptions o = *security_;
    o.cluster_token_file.clear();
    o.api_token_file.clear();
    return MustLoad(o);
  }
  static std::shared_ptr<const ClusterSecurity> FullCluster() { return MustLoad(*security_); }

  // The decode worker's used KV blocks, polled until zero or `wait`; -1
  // when GetLoad fails.
  static int64_t DecodeBlocksUsed(const std::string& address, absl::Duration wait) {
    auto stub = v1::DecodeService::NewStub(FullCluster()->Dial(address));
    const absl::Time give_up = absl::Now() + wait;
    while (true) {
      grpc::ClientContext ctx;
      ctx.set_deadline(Soon());
      v1::LoadReport load;
      if (!stub->GetLoad(&ctx, v1::GetLoadRequest(), &load).ok()) return -1;
      if (load.kv_blocks_used() == 0 || absl::Now() >= give_up) return load.kv_blocks_used();
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

  static std::vector<std::vector<int32_t>> Generate(const std::string& router, const PublicClientOptions& client,
                                                    const RequestSpec& spec, const std::vector<std::string>& prompts) {
    auto stub = v1::GenerationService::NewStub(MustDialPublic(router, client));
    std::vector<std::vector<int32_t>> out;
    for (const std::string& p : prompts) {
      RequestSpec s = spec;
      s.prompt = p;
      testing::StreamResult r = testing::StreamGenerate(*stub, testing::ToGenerateRequest(s));
      EXPECT_TRUE(r.status.ok()) << r.status.error_message();
      out.push_back(r.tokens);
    }
    return out;
  }

  static testing::TempDir* dir_;
  static testing::TempDir* logs_;
  static testing::TestCerts* certs_;
  static SecurityOptions* security_;
  static LocalCluster* cluster_;
};

testing::TempDir* TlsClusterTest::dir_ = nullptr;
testing::TempDir* TlsClusterTest::logs_ = nullptr;
testing::TestCerts* TlsClusterTest::certs_ = nullptr;
SecurityOptions* TlsClusterTest::security_ = nullptr;
LocalCluster* TlsClusterTest::cluster_ = nullptr;

const std::vector<std::string> kPrompts = {"The quick brown fox", "Once upon a time in a land far away",
                                           "def fibonacci(n):"};

TEST_F(TlsClusterTest, GeneratesTheSameTokensAsAPlaintextClusterAndTheCli) {
  ASSERT_NE(cluster_, nullptr);
  RequestSpec greedy;
  greedy.max_new_tokens = 8;
  RequestSpec seeded = greedy;
  seeded.temperature = 0.9f;
  seeded.top_k = 40;
  seeded.seed = 7;
  auto plaintext = StartCluster(SecurityOptions(), "plaintext");
  ASSERT_NE(plaintext, nullptr);
  for (const RequestSpec& spec : {greedy, seeded}) {
    const auto reference = testing::MonolithicTokens(dir_->str() + "/model", spec, kPrompts);
    for (const auto& t : reference) ASSERT_EQ(t.size(), 8u) << "the CLI failed";
    const auto secure = Generate(cluster_->router_address(), Client(kApiToken), spec, kPrompts);
    const auto plain = Generate(plaintext->router_address(), PublicClientOptions(), spec, kPrompts);
    EXPECT_EQ(secure, plain);
    EXPECT_EQ(secure, reference);
  }
  EXPECT_TRUE(plaintext->Stop().ok());
  // Every request's KV was released through the authenticated internal
  // calls (GetLoad is one too).
  EXPECT_EQ(DecodeBlocksUsed(cluster_->decode_addresses()[0], absl::Seconds(5)), 0);
}

TEST_F(TlsClusterTest, PlaintextToATlsPortIsRefused) {
  ASSERT_NE(cluster_, nullptr);
  auto plaintext = ClusterSecurity::Plaintext();
  EXPECT_EQ(GetModelInfo(plaintext->Dial(cluster_->router_address())).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ReserveKv(plaintext->Dial(cluster_->decode_addresses()[0])).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Prefill(plaintext->Dial(cluster_->prefill_addresses()[0])).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsClusterTest, AClientCertificateFromAnotherCaIsRefused) {
  ASSERT_NE(cluster_, nullptr);
  PublicClientOptions stranger = Client(kApiToken);
  stranger.cert_file = certs_->other_cert;
  stranger.key_file = certs_->other_key;
  EXPECT_EQ(GetModelInfo(MustDialPublic(cluster_->router_address(), stranger)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(RegisterWorker(MustDialPublic(cluster_->router_address(), stranger)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ReserveKv(MustDialPublic(cluster_->decode_addresses()[0], stranger)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // The same stranger even with the cluster token.
  SecurityOptions o;
  o.tls_cert_file = certs_->other_cert;
  o.tls_key_file = certs_->other_key;
  o.tls_client_ca_file = certs_->ca;
  o.cluster_token_file = security_->cluster_token_file;
  EXPECT_EQ(ReserveKv(MustLoad(o)->Dial(cluster_->decode_addresses()[0])).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsClusterTest, AMissingWrongOrWrongCaseTokenIsRefused) {
  ASSERT_NE(cluster_, nullptr);
  const std::string router = cluster_->router_address();
  for (const std::string& token : {std::string(), std::string("wrong"), std::string("api-token-0123"),
                                   std::string("API-TOKEN-0123"), absl::StrCat(kApiToken, "x")}) {
    SCOPED_TRACE(token);
    const grpc::Status s = GetModelInfo(MustDialPublic(router, Client(token)));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    EXPECT_THAT(s.error_message(), ::testing::AnyOf(HasSubstr("bearer token"), HasSubstr("Bearer")));
    RequestSpec spec;
    spec.prompt = "hello";
    auto stub = v1::GenerationService::NewStub(MustDialPublic(router, Client(token)));
    EXPECT_EQ(testing::StreamGenerate(*stub, testing::ToGenerateRequest(spec)).status.error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  v1::ModelInfo info;
  ASSERT_TRUE(GetModelInfo(MustDialPublic(router, Client(kApiToken)), &info).ok());
  EXPECT_EQ(info.decode_workers(), 1);
}

TEST_F(TlsClusterTest, InternalRpcsWithoutTheClusterCredentialAreRefused) {
  ASSERT_NE(cluster_, nullptr);
  const std::string router = cluster_->router_address();
  const std::string decode = cluster_->decode_addresses()[0];
  const std::string prefill = cluster_->prefill_addresses()[0];

  // TLS but no client certificate: the router refuses per call (its port
  // is shared with public clients), the workers in the handshake.
  auto anonymous = [&](const std::string& a) { return MustDialPublic(a, Client(kApiToken)); };
  for (const grpc::Status& s : {RegisterWorker(anonymous(router)), ReportLoad(anonymous(router))}) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("client certificate"));
  }
  EXPECT_EQ(ReserveKv(anonymous(decode)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(HoldKvWrite(anonymous(decode)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Prefill(anonymous(prefill)).error_code(), grpc::StatusCode::UNAVAILABLE);

  // The cluster's certificate but not its token.
  const auto cert_only = CertificateOnly();
  for (const grpc::Status& s : {RegisterWorker(cert_only->Dial(router)), ReportLoad(cert_only->Dial(router)),
                                ReserveKv(cert_only->Dial(decode)), HoldKvWrite(cert_only->Dial(decode)),
                                Prefill(cert_only->Dial(prefill))}) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("cluster token"));
  }

  // Nothing of it took effect: still one worker of each kind, no block held.
  v1::ModelInfo info;
  ASSERT_TRUE(GetModelInfo(MustDialPublic(router, Client(kApiToken)), &info).ok());
  EXPECT_EQ(info.decode_workers(), 1);
  EXPECT_EQ(info.prefill_workers(), 1);
  EXPECT_EQ(DecodeBlocksUsed(decode, absl::ZeroDuration()), 0);

  // With both, an internal call goes through (a reservation, then released).
  v1::ReserveKvRequest req;
  req.set_request_id("member");
  req.set_prompt_tokens(16);
  req.set_max_new_tokens(16);
  req.set_ttl_seconds(30);
  grpc::ClientContext rctx;
  rctx.set_deadline(Soon());
  v1::ReserveKvResponse resp;
  auto stub = v1::DecodeService::NewStub(FullCluster()->Dial(decode));
  const grpc::Status reserved = stub->ReserveKv(&rctx, req, &resp);
  ASSERT_TRUE(reserved.ok()) << reserved.error_message();
  v1::ReleaseKvRequest release;
  release.set_transfer_id(resp.transfer_id());
  grpc::ClientContext lctx;
  lctx.set_deadline(Soon());
  v1::ReleaseKvResponse released;
  EXPECT_TRUE(stub->ReleaseKv(&lctx, release, &released).ok());
}

TEST_F(TlsClusterTest, AClusterTokenAloneGuardsAPlaintextCluster) {
  SecurityOptions token_only;
  token_only.cluster_token_file = security_->cluster_token_file;
  auto c = StartCluster(token_only, "token-only");
  ASSERT_NE(c, nullptr);
  auto none = ClusterSecurity::Plaintext();
  for (const grpc::Status& s :
       {RegisterWorker(none->Dial(c->router_address())), ReserveKv(none->Dial(c->decode_addresses()[0])),
        Prefill(none->Dial(c->prefill_addresses()[0]))}) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  }
  RequestSpec spec;
  spec.max_new_tokens = 4;
  const auto tokens = Generate(c->router_address(), PublicClientOptions(), spec, {"Hello"});
  EXPECT_EQ(tokens[0].size(), 4u);
  EXPECT_TRUE(c->Stop().ok());
}

// Runs `cmd` (stderr too); its output and exit code.
std::pair<std::string, int> RunCommand(const std::string& cmd) {
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return {"popen failed", -1};
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  const int status = pclose(f);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

TEST_F(TlsClusterTest, TandemHealthProbesWithTheClusterCertificate) {
  ASSERT_NE(cluster_, nullptr);
  // What the Kubernetes exec probes run (deploy/base).
  for (const std::string& a : {cluster_->router_address(), cluster_->decode_addresses()[0]}) {
    const std::string base = absl::StrCat(testing::BinDir(), "/tandem health --address=", a);
    const auto [ok, ok_code] = RunCommand(absl::StrCat(base, " --tls_cert=", certs_->cert, " --tls_key=", certs_->key,
                                                " --tls_client_ca=", certs_->ca));
    EXPECT_EQ(ok_code, 0) << ok;
    EXPECT_THAT(ok, HasSubstr("SERVING"));
    const auto [plain, plain_code] = RunCommand(base);
    EXPECT_EQ(plain_code, 1) << plain;
  }
}

TEST_F(TlsClusterTest, AnUnreadableCertificateStopsTheProcessNamingTheFlag) {
  for (const char* binary : {"tandem-router", "tandem-decode-worker --router=127.0.0.1:1"}) {
    const std::string cmd = absl::StrCat(testing::BinDir(), "/", binary, " --tls_cert=", dir_->str(),
                                         "/missing.pem --tls_key=", certs_->key);
    const auto [out, code] = RunCommand(cmd);
    EXPECT_EQ(code, 1) << binary << ": " << out;
    EXPECT_THAT(out, HasSubstr("INVALID_ARGUMENT")) << binary;
    EXPECT_THAT(out, HasSubstr("--tls_cert")) << binary;
  }
}

}  // namespace
}  // namespace tandem
