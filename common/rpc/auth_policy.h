// Which caller may call which method, decided per call before any handler
// runs (the server credentials' metadata processor calls Authorize).
//
// Deny by default: every method is internal to the cluster unless it is
// named here as public (tandem.v1.GenerationService, server reflection) or
// open (grpc.health.v1.Health, which probes and load balancers call
// without credentials). So an internal service added later is protected
// without touching this file.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "grpcpp/support/status.h"

namespace tandem {

// Metadata keys. gRPC metadata keys are lower case.
inline constexpr std::string_view kAuthorizationKey = "authorization";
inline constexpr std::string_view kClusterTokenKey = "x-tandem-cluster-token";

enum class MethodKind { kOpen, kPublic, kInternal };
// `path` is the HTTP/2 :path, "/package.Service/Method".
MethodKind ClassifyMethod(std::string_view path);

struct AuthPolicy {
  // Internal methods need a client certificate verified against the
  // cluster CA (set with mutual TLS).
  bool require_cluster_certificate = false;
  // Internal methods need this in kClusterTokenKey; empty: not checked.
  std::string cluster_token;
  // Public methods need "Bearer <api_token>" in kAuthorizationKey; empty:
  // not checked.
  std::string api_token;

  bool checks_anything() const {
    return require_cluster_certificate || !cluster_token.empty() || !api_token.empty();
  }
};

// What the server knows of one call.
struct CallFacts {
  std::string_view path;
  std::optional<std::string_view> authorization;
  std::optional<std::string_view> cluster_token;
  // The TLS handshake verified a client certificate against the cluster CA.
  bool peer_has_cluster_certificate = false;
};

// OK, or UNAUTHENTICATED saying what is missing or wrong (never echoing
// what the caller sent).
grpc::Status Authorize(const AuthPolicy& policy, const CallFacts& call);

// Equality of a secret and a candidate whose running time depends only on
// the secret's length, not on where they first differ.
bool ConstantTimeEquals(std::string_view candidate, std::string_view secret);

}  // namespace tandem
