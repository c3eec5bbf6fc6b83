#include "common/rpc/auth_policy.h"

#include <cstddef>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tandem/v1/generate.grpc.pb.h"

namespace tandem {
namespace {

// Well-known protocol names of gRPC's own services.
constexpr std::string_view kHealthService = "grpc.health.v1.Health";
constexpr std::string_view kReflectionService = "grpc.reflection.v1alpha.ServerReflection";

// The service part of "/package.Service/Method"; "" when malformed.
std::string_view ServiceOf(std::string_view path) {
  if (path.empty() || path[0] != '/') return "";
  path.remove_prefix(1);
  const size_t slash = path.find('/');
  return slash == std::string_view::npos ? "" : path.substr(0, slash);
}

grpc::Status Unauthenticated(std::string message) {
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::move(message));
}

}  // namespace

MethodKind ClassifyMethod(std::string_view path) {
  const std::string_view service = ServiceOf(path);
  if (service == kHealthService) return MethodKind::kOpen;
  if (service == v1::GenerationService::service_full_name() || service == kReflectionService) {
    return MethodKind::kPublic;
  }
  return MethodKind::kInternal;
}

bool ConstantTimeEquals(std::string_view candidate, std::string_view secret) {
  // Every byte of the secret is visited whatever the candidate holds; a
  // length difference is folded into the same accumulator, so neither the
  // position of the first difference nor a length mismatch returns early.
  size_t diff = candidate.size() ^ secret.size();
  for (size_t i = 0; i < secret.size(); ++i) {
    const unsigned char c = candidate.empty() ? 0 : static_cast<unsigned char>(candidate[i % candidate.size()]);
    diff |= static_cast<size_t>(c ^ static_cast<unsigned char>(secret[i]));
  }
  return diff == 0;
}

grpc::Status Authorize(const AuthPolicy& policy, const CallFacts& call) {
  switch (ClassifyMethod(call.path)) {
    case MethodKind::kOpen:
      return grpc::Status::OK;
    case MethodKind::kPublic: {
      if (policy.api_token.empty()) return grpc::Status::OK;
      if (!call.authorization.has_value()) {
        return Unauthenticated("this API needs a bearer token: send metadata 'authorization: Bearer <token>'");
      }
      // The scheme is case-insensitive (RFC 7235); the token is not.
      constexpr std::string_view kScheme = "bearer ";
      const std::string_view value = *call.authorization;
      if (value.size() < kScheme.size() || !absl::EqualsIgnoreCase(absl::string_view(value.data(), kScheme.size()),
                                                                 absl::string_view(kScheme.data(), kScheme.size()))) {
        return Unauthenticated("the authorization metadata must be 'Bearer <token>'");
      }
      if (!ConstantTimeEquals(value.substr(kScheme.size()), policy.api_token)) {
        return Unauthenticated("invalid bearer token");
      }
      return grpc::Status::OK;
    }
    case MethodKind::kInternal: {
      if (policy.require_cluster_certificate && !call.peer_has_cluster_certificate) {
        return Unauthenticated(absl::StrCat(std::string(call.path),
                                            " is internal to the cluster: the caller presented no client "
                                            "certificate from the cluster CA"));
      }
      if (!policy.cluster_token.empty()) {
        if (!call.cluster_token.has_value()) {
          return Unauthenticated(absl::StrCat(std::string(call.path), " is internal to the cluster: no cluster token (metadata '",
                                              std::string(kClusterTokenKey), "')"));
        }
        if (!ConstantTimeEquals(*call.cluster_token, policy.cluster_token)) {
          return Unauthenticated(absl::StrCat(std::string(call.path), " is internal to the cluster: invalid cluster token"));
        }
      }
      return grpc::Status::OK;
    }
  }
  return Unauthenticated("unknown method kind");
}

}  // namespace tandem
