// Server and channel credentials over real gRPC on loopback: which callers
// the handshake refuses, which the per-call policy refuses, and that the
// right credentials get through.
#include "common/rpc/tls_credentials.h"

#include <chrono>
#include <fstream>

#include "common/rpc/grpc_server.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tandem/v1/generate.grpc.pb.h"
#include "tandem/v1/worker.grpc.pb.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_certs.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

class Registry final : public v1::WorkerRegistry::Service {
  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::WorkerInfo*,
                              v1::RegisterWorkerResponse* resp) override {
    resp->set_worker_id("w-1");
    return grpc::Status::OK;
  }
};

class Generation final : public v1::GenerationService::Service {
  grpc::Status GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*, v1::ModelInfo* info) override {
    info->set_name("m");
    return grpc::Status::OK;
  }
};

grpc::Status CallInternal(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::WorkerRegistry::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::RegisterWorkerResponse resp;
  grpc::Status s = stub->RegisterWorker(&ctx, v1::WorkerInfo(), &resp);
  if (s.ok()) EXPECT_EQ(resp.worker_id(), "w-1");
  return s;
}

grpc::Status CallPublic(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::GenerationService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ModelInfo info;
  return stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info);
}

std::shared_ptr<const ClusterSecurity> MustLoad(const SecurityOptions& o) {
  absl::StatusOr<std::shared_ptr<const ClusterSecurity>> s = ClusterSecurity::Load(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : ClusterSecurity::Plaintext();
}

std::shared_ptr<grpc::Channel> MustDialPublic(const std::string& address, const PublicClientOptions& o) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> c = DialPublic(address, o);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

class TlsCredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<testing::TestCerts> certs = testing::MakeTestCerts(dir_.str());
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    mtls_.tls_cert_file = certs_.cert;
    mtls_.tls_key_file = certs_.key;
    mtls_.tls_client_ca_file = certs_.ca;
  }

  std::string WriteFile(const std::string& name, const std::string& text) {
    const std::string path = dir_.str() + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  void Serve(const ClusterSecurity& security, ClientCertificates client_certs) {
    absl::StatusOr<std::unique_ptr<GrpcServer>> s = GrpcServer::Start(
        "127.0.0.1:0", {&registry_, &generation_}, GrpcServerLimits(), security.ServerCredentials(client_certs));
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    address_ = server_->address();
  }

  testing::TempDir dir_;
  testing::TestCerts certs_;
  SecurityOptions mtls_;
  Registry registry_;
  Generation generation_;
  std::unique_ptr<GrpcServer> server_;
  std::string address_;
};

TEST_F(TlsCredentialsTest, LoadNamesTheFlagOfABadFile) {
  auto expect_invalid = [](const SecurityOptions& o, const std::string& flag) {
    absl::StatusOr<std::shared_ptr<const ClusterSecurity>> s = ClusterSecurity::Load(o);
    ASSERT_FALSE(s.ok()) << flag;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
    EXPECT_THAT(s.status().message(), HasSubstr(flag));
  };
  SecurityOptions o = mtls_;
  o.tls_cert_file = dir_.str() + "/missing.pem";
  expect_invalid(o, "--tls_cert");
  o = mtls_;
  o.tls_key_file = dir_.str() + "/missing.key";
  expect_invalid(o, "--tls_key");
  o = mtls_;
  o.tls_client_ca_file = dir_.str() + "/missing-ca.pem";
  expect_invalid(o, "--tls_client_ca");
  o = mtls_;
  o.tls_key_file = certs_.cert;  // a certificate where the key should be
  expect_invalid(o, "--tls_key");
  o = mtls_;
  o.tls_key_file.clear();
  expect_invalid(o, "--tls_key");
  o = SecurityOptions();
  o.tls_client_ca_file = certs_.ca;
  expect_invalid(o, "--tls_client_ca");
  o = SecurityOptions();
  o.cluster_token_file = WriteFile("empty.token", "\n");
  expect_invalid(o, "--cluster_token_file");
  o = SecurityOptions();
  o.api_token_file = dir_.str() + "/missing.token";
  expect_invalid(o, "--api_token_file");
  o = SecurityOptions();
  o.api_token = "a";
  o.api_token_file = WriteFile("api.token", "b");
  expect_invalid(o, "--api_token");

  EXPECT_EQ(ClusterSecurity::Plaintext()->Describe(), "plaintext");
  o = mtls_;
  o.cluster_token_file = WriteFile("cluster.token", "c\n");
  o.api_token = "a";
  EXPECT_EQ(MustLoad(o)->Describe(), "mutual TLS + cluster token + api token");
}

TEST_F(TlsCredentialsTest, RouterPortTakesPublicClientsAndRefusesInternalCallsWithoutACertificate) {
  std::shared_ptr<const ClusterSecurity> cluster = MustLoad(mtls_);
  Serve(*cluster, ClientCertificates::kVerifyIfPresented);

  // A public client over TLS, no certificate: the public API, not the internal one.
  auto anonymous = MustDialPublic(address_, {.tls = true, .ca_file = certs_.ca});
  EXPECT_TRUE(CallPublic(anonymous).ok());
  const grpc::Status internal = CallInternal(anonymous);
  EXPECT_EQ(internal.error_code(), grpc::StatusCode::UNAUTHENTICATED) << internal.error_message();
  EXPECT_THAT(internal.error_message(), HasSubstr("RegisterWorker"));

  // A cluster member's channel.
  EXPECT_TRUE(CallInternal(cluster->Dial(address_)).ok());
  EXPECT_TRUE(CallPublic(cluster->Dial(address_)).ok());

  // A certificate from another CA fails the handshake, whatever the method.
  auto stranger = MustDialPublic(address_, {.tls = true, .ca_file = certs_.ca, .cert_file = certs_.other_cert,
                                            .key_file = certs_.other_key});
  EXPECT_EQ(CallInternal(stranger).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(CallPublic(stranger).error_code(), grpc::StatusCode::UNAVAILABLE);

  // Plaintext to a TLS port.
  auto plaintext = MustDialPublic(address_, {});
  EXPECT_EQ(CallPublic(plaintext).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(CallInternal(plaintext).error_code(), grpc::StatusCode::UNAVAILABLE);

  // A client that does not trust the server's CA.
  auto distrustful = MustDialPublic(address_, {.tls = true, .ca_file = certs_.other_ca});
  EXPECT_EQ(CallPublic(distrustful).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsCredentialsTest, WorkerPortRequiresAClusterCertificateInTheHandshake) {
  std::shared_ptr<const ClusterSecurity> cluster = MustLoad(mtls_);
  Serve(*cluster, ClientCertificates::kRequire);
  EXPECT_TRUE(CallInternal(cluster->Dial(address_)).ok());
  auto anonymous = MustDialPublic(address_, {.tls = true, .ca_file = certs_.ca});
  EXPECT_EQ(CallInternal(anonymous).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(CallPublic(anonymous).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsCredentialsTest, ServerNameReplacesTheDialedHostInVerification) {
  std::shared_ptr<const ClusterSecurity> cluster = MustLoad(mtls_);
  Serve(*cluster, ClientCertificates::kRequire);
  SecurityOptions named = mtls_;
  named.tls_server_name = certs_.server_name;
  EXPECT_TRUE(CallInternal(MustLoad(named)->Dial(address_)).ok());
  named.tls_server_name = "somebody-else";
  EXPECT_EQ(CallInternal(MustLoad(named)->Dial(address_)).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsCredentialsTest, ClusterTokenGuardsInternalCallsOnAPlaintextPort) {
  SecurityOptions o;
  o.cluster_token_file = WriteFile("cluster.token", "cluster-secret\n");
  std::shared_ptr<const ClusterSecurity> cluster = MustLoad(o);
  Serve(*cluster, ClientCertificates::kRequire);
  EXPECT_TRUE(CallInternal(cluster->Dial(address_)).ok());

  const grpc::Status none = CallInternal(ClusterSecurity::Plaintext()->Dial(address_));
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(none.error_message(), HasSubstr("no cluster token"));
  o.cluster_token_file = WriteFile("wrong.token", "Cluster-Secret");
  const grpc::Status wrong = CallInternal(MustLoad(o)->Dial(address_));
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(), HasSubstr("invalid cluster token"));
  // The public API does not need it.
  EXPECT_TRUE(CallPublic(ClusterSecurity::Plaintext()->Dial(address_)).ok());
}

TEST_F(TlsCredentialsTest, ApiTokenGuardsThePublicApiOverTls) {
  SecurityOptions o = mtls_;
  o.api_token_file = WriteFile("api.token", "Api-Secret\n");
  Serve(*MustLoad(o), ClientCertificates::kVerifyIfPresented);
  PublicClientOptions client{.tls = true, .ca_file = certs_.ca};
  EXPECT_EQ(CallPublic(MustDialPublic(address_, client)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  client.token = "api-secret";
  EXPECT_EQ(CallPublic(MustDialPublic(address_, client)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  client.token = "Api-Secret";
  EXPECT_TRUE(CallPublic(MustDialPublic(address_, client)).ok());

  // What tandem up and the tests use: the cluster's own files.
  absl::StatusOr<PublicClientOptions> inside = ClusterPublicClientOptions(o);
  ASSERT_TRUE(inside.ok()) << inside.status();
  EXPECT_EQ(inside->token, "Api-Secret");
  EXPECT_TRUE(CallPublic(MustDialPublic(address_, *inside)).ok());
}

}  // namespace
}  // namespace tandem
