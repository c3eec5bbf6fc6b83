// The public API's bearer token flags (--api_token, --api_token_file):
// the router's, and `tandem up`'s to pass them on. Apart from
// tls_flags.h so the workers, which serve no public API, do not take them.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "common/rpc/tls_credentials.h"

namespace tandem {

// TlsOptionsFromFlags() with the api token flags.
SecurityOptions SecurityOptionsWithApiTokenFromFlags();

// The router: InstallClusterSecurity(SecurityOptionsWithApiTokenFromFlags()).
absl::StatusOr<std::shared_ptr<const ClusterSecurity>> RouterSecurityFromFlags();

}  // namespace tandem
