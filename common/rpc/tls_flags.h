// The transport-security flags every tandem binary takes (--tls_cert,
// --tls_key, --tls_client_ca, --tls_server_name, --cluster_token_file),
// defined once here so each main calls one function.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/rpc/tls_credentials.h"

namespace tandem {

// The flags' values (api token fields left empty: api_token_flags.h).
SecurityOptions TlsOptionsFromFlags();

// Loads `options` (INVALID_ARGUMENT naming the flag), makes them the
// process's cluster security (cluster_channel.h) and logs what is on.
absl::StatusOr<std::shared_ptr<const ClusterSecurity>> InstallClusterSecurity(const SecurityOptions& options);

// Workers: InstallClusterSecurity(TlsOptionsFromFlags()).
absl::StatusOr<std::shared_ptr<const ClusterSecurity>> ClusterSecurityFromFlags();

// `options` as command-line flags for a child process (tandem up): the
// TLS and cluster token flags, and the api token flags when `api_token`
// (the router is the only process that takes them).
std::vector<std::string> SecurityFlagArgs(const SecurityOptions& options, bool api_token);

}  // namespace tandem
