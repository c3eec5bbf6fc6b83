#include "common/rpc/tls_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "common/rpc/cluster_channel.h"
#include "common/util/logging.h"

ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain this process presents; empty: plaintext");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM cluster CA: mutual TLS; internal RPCs need a client certificate it issued, and internal peers' "
          "server certificates are verified against it");
ABSL_FLAG(std::string, tls_server_name, "",
          "name internal peers' certificates carry, checked instead of the dialed host; empty: the host");
ABSL_FLAG(std::string, cluster_token_file, "",
          "file holding a shared secret sent on every internal RPC and required of internal callers");

namespace tandem {

SecurityOptions TlsOptionsFromFlags() {
  SecurityOptions o;
  o.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  o.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  o.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  o.cluster_token_file = absl::GetFlag(FLAGS_cluster_token_file);
  return o;
}

absl::StatusOr<std::shared_ptr<const ClusterSecurity>> InstallClusterSecurity(const SecurityOptions& options) {
  absl::StatusOr<std::shared_ptr<const ClusterSecurity>> security = ClusterSecurity::Load(options);
  if (!security.ok()) return security.status();
  SetProcessClusterSecurity(*security);
  TANDEM_LOG(INFO) << "transport security: " << (*security)->Describe();
  if ((*security)->tls() && !(*security)->mutual_tls() && options.cluster_token_file.empty()) {
    TANDEM_LOG(WARNING) << "TLS without --tls_client_ca or --cluster_token_file: internal RPCs accept any caller "
                           "that reaches the port";
  }
  return security;
}

absl::StatusOr<std::shared_ptr<const ClusterSecurity>> ClusterSecurityFromFlags() {
  return InstallClusterSecurity(TlsOptionsFromFlags());
}

std::vector<std::string> SecurityFlagArgs(const SecurityOptions& o, bool api_token) {
  std::vector<std::string> args;
  auto add = [&](const char* flag, const std::string& value) {
    if (!value.empty()) args.push_back(absl::StrCat("--", flag, "=", value));
  };
  add("tls_cert", o.tls_cert_file);
  add("tls_key", o.tls_key_file);
  add("tls_client_ca", o.tls_client_ca_file);
  add("tls_server_name", o.tls_server_name);
  add("cluster_token_file", o.cluster_token_file);
  if (api_token) {
    add("api_token", o.api_token);
    add("api_token_file", o.api_token_file);
  }
  return args;
}

}  // namespace tandem
