#include "common/rpc/auth_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tandem {
namespace {

using ::testing::HasSubstr;

constexpr char kGenerate[] = "/tandem.v1.GenerationService/Generate";
constexpr char kRegister[] = "/tandem.v1.WorkerRegistry/RegisterWorker";
constexpr char kReserve[] = "/tandem.v1.DecodeService/ReserveKv";
constexpr char kHealth[] = "/grpc.health.v1.Health/Check";

TEST(ClassifyMethodTest, DeniesByDefault) {
  EXPECT_EQ(ClassifyMethod(kHealth), MethodKind::kOpen);
  EXPECT_EQ(ClassifyMethod(kGenerate), MethodKind::kPublic);
  EXPECT_EQ(ClassifyMethod("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"), MethodKind::kPublic);
  EXPECT_EQ(ClassifyMethod(kRegister), MethodKind::kInternal);
  EXPECT_EQ(ClassifyMethod("/tandem.v1.WorkerRegistry/ReportLoad"), MethodKind::kInternal);
  EXPECT_EQ(ClassifyMethod(kReserve), MethodKind::kInternal);
  EXPECT_EQ(ClassifyMethod("/tandem.v1.PrefillService/Prefill"), MethodKind::kInternal);
  EXPECT_EQ(ClassifyMethod("/tandem.v1.DecodeService/StartNcclTransfer"), MethodKind::kInternal);
  // A service whose name only starts like a public one is not public.
  EXPECT_EQ(ClassifyMethod("/tandem.v1.GenerationServiceX/Generate"), MethodKind::kInternal);
  EXPECT_EQ(ClassifyMethod("tandem.v1.GenerationService/Generate"), MethodKind::kInternal);
  EXPECT_EQ(ClassifyMethod(""), MethodKind::kInternal);
}

TEST(AuthorizeTest, NoPolicyLetsEverythingThrough) {
  const AuthPolicy none;
  for (const char* path : {kGenerate, kRegister, kReserve, kHealth}) {
    EXPECT_TRUE(Authorize(none, CallFacts{path}).ok()) << path;
  }
}

TEST(AuthorizeTest, ApiTokenGuardsOnlyThePublicApi) {
  AuthPolicy p;
  p.api_token = "Secret-Token";
  auto call = [&](const char* path, std::optional<std::string_view> auth) {
    CallFacts c{path};
    c.authorization = auth;
    return Authorize(p, c);
  };
  EXPECT_TRUE(call(kGenerate, "Bearer Secret-Token").ok());
  EXPECT_TRUE(call(kGenerate, "bearer Secret-Token").ok());  // the scheme is case-insensitive

  const grpc::Status missing = call(kGenerate, std::nullopt);
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.error_message(), HasSubstr("authorization: Bearer"));
  for (std::string_view bad : {"Bearer secret-token", "Bearer Secret-Toke", "Bearer Secret-Token2", "Bearer ",
                               "Secret-Token", "Basic Secret-Token", "Bearer"}) {
    const grpc::Status s = call(kGenerate, bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << bad;
    // The message never echoes what the caller sent.
    EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr("Secret"))) << bad;
  }
  EXPECT_TRUE(call(kHealth, std::nullopt).ok());
  // Internal methods are the cluster credential's business, not the api token's.
  EXPECT_TRUE(call(kRegister, std::nullopt).ok());
}

TEST(AuthorizeTest, ClusterTokenGuardsInternalMethods) {
  AuthPolicy p;
  p.cluster_token = "cluster-secret";
  auto call = [&](const char* path, std::optional<std::string_view> token) {
    CallFacts c{path};
    c.cluster_token = token;
    return Authorize(p, c);
  };
  EXPECT_TRUE(call(kRegister, "cluster-secret").ok());
  EXPECT_TRUE(call(kReserve, "cluster-secret").ok());
  for (std::optional<std::string_view> bad :
       {std::optional<std::string_view>(), std::optional<std::string_view>("Cluster-Secret"),
        std::optional<std::string_view>("cluster-secre"), std::optional<std::string_view>("")}) {
    const grpc::Status s = call(kReserve, bad);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(s.error_message(), HasSubstr("internal to the cluster"));
    EXPECT_THAT(s.error_message(), HasSubstr("ReserveKv"));
  }
  EXPECT_TRUE(call(kGenerate, std::nullopt).ok());
  EXPECT_TRUE(call(kHealth, std::nullopt).ok());
}

TEST(AuthorizeTest, MutualTlsNeedsAClusterCertificateForInternalMethods) {
  AuthPolicy p;
  p.require_cluster_certificate = true;
  CallFacts c{kRegister};
  const grpc::Status s = Authorize(p, c);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("client certificate"));
  c.peer_has_cluster_certificate = true;
  EXPECT_TRUE(Authorize(p, c).ok());
  // Public clients need no certificate.
  EXPECT_TRUE(Authorize(p, CallFacts{kGenerate}).ok());

  // Both credentials configured: both are needed.
  p.cluster_token = "t";
  EXPECT_EQ(Authorize(p, c).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  c.cluster_token = "t";
  EXPECT_TRUE(Authorize(p, c).ok());
  c.peer_has_cluster_certificate = false;
  EXPECT_EQ(Authorize(p, c).error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(ConstantTimeEqualsTest, ComparesWholeStrings) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abd", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("ABC", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("ab", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abcabc", "abc"));  // a repeat of the secret is not the secret
  EXPECT_FALSE(ConstantTimeEquals("", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", ""));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace tandem
