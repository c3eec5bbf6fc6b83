#include "common/rpc/api_token_flags.h"

#include "absl/flags/flag.h"
#include "common/rpc/tls_flags.h"

ABSL_FLAG(std::string, api_token, "",
          "bearer token public clients must send ('authorization: Bearer <token>'); visible in the process "
          "list, so prefer --api_token_file");
ABSL_FLAG(std::string, api_token_file, "", "file holding the public API's bearer token");

namespace tandem {

SecurityOptions SecurityOptionsWithApiTokenFromFlags() {
  SecurityOptions o = TlsOptionsFromFlags();
  o.api_token = absl::GetFlag(FLAGS_api_token);
  o.api_token_file = absl::GetFlag(FLAGS_api_token_file);
  return o;
}

absl::StatusOr<std::shared_ptr<const ClusterSecurity>> RouterSecurityFromFlags() {
  return InstallClusterSecurity(SecurityOptionsWithApiTokenFromFlags());
}

}  // namespace tandem
