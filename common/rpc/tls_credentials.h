// Transport security of every tandem process, from one typed config: TLS
// on the public API, mutual TLS (or a shared cluster token) on internal
// RPCs, and an optional bearer token on the public API.
//
// A cluster is all TLS or all plaintext. With --tls_client_ca, that CA is
// the cluster CA: it verifies the client certificates of callers and the
// server certificates of the internal peers a process dials, so every
// router and worker certificate is issued by it. Plaintext (no flag) stays
// the default.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/rpc/auth_policy.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/server_credentials.h"

namespace tandem {

// File paths and names as the flags give them (tls_flags.h,
// api_token_flags.h); Load() reads and checks them.
struct SecurityOptions {
  std::string tls_cert_file;       // --tls_cert: PEM chain this process presents
  std::string tls_key_file;        // --tls_key: its PEM private key
  std::string tls_client_ca_file;  // --tls_client_ca: the cluster CA (mutual TLS)
  // --tls_server_name: the name internal peers' certificates carry, checked
  // instead of the dialed host (workers are dialed by pod IP, which a
  // certificate issued ahead of time cannot name). Empty: the dialed host.
  std::string tls_server_name;
  std::string cluster_token_file;  // --cluster_token_file: shared secret of internal calls
  // The public API's bearer token (router only): one of the two.
  std::string api_token;       // --api_token
  std::string api_token_file;  // --api_token_file
};

// Who may connect to a server without a client certificate.
enum class ClientCertificates {
  // Workers: every service but health is internal, so the TLS handshake
  // itself refuses callers without a certificate from the cluster CA.
  kRequire,
  // The router: public clients (no certificate) share its port with
  // workers, so a certificate is verified when presented and the internal
  // methods are refused per call (auth_policy.h) when it is not.
  kVerifyIfPresented,
};

class ClusterSecurity {
 public:
  // INVALID_ARGUMENT naming the flag for a missing or unreadable file, a
  // file that is not PEM, a certificate without its key, a CA without a
  // certificate, an empty token, or both api token flags.
  static absl::StatusOr<std::shared_ptr<const ClusterSecurity>> Load(const SecurityOptions& options);
  // Plaintext, no tokens: what a process runs with when no flag is given.
  static std::shared_ptr<const ClusterSecurity> Plaintext();

  bool tls() const { return !cert_pem_.empty(); }
  bool mutual_tls() const { return !ca_pem_.empty(); }
  // For logs: "plaintext", "TLS", "mutual TLS + cluster token + api token", ...
  std::string Describe() const;
  // The public API's bearer token (--api_token[_file]); empty: none. The
  // router's HTTP API checks it itself (router/http).
  const std::string& api_token() const { return policy_.api_token; }

  // The listening port's credentials, with the per-call checks of
  // auth_policy.h attached (in plaintext too, for the tokens).
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials(ClientCertificates client_certs) const;
  // A channel for internal calls to another tandem process: TLS with this
  // process's certificate when configured, and the cluster token on every
  // call when one is set.
  std::shared_ptr<grpc::Channel> Dial(const std::string& address) const;

 private:
  ClusterSecurity() = default;
  std::string cert_pem_, key_pem_, ca_pem_;
  std::string server_name_;
  AuthPolicy policy_;
};

// How a public client (tandem client, tandem up, tandem-bench, the tests)
// reaches the router's GenerationService.
struct PublicClientOptions {
  bool tls = false;
  std::string ca_file;  // PEM roots that verify the router; empty: the system's
  std::string token;    // sent as "authorization: Bearer <token>" when set
  // A client certificate, for callers that also make internal calls (the
  // tests); empty for ordinary clients.
  std::string cert_file, key_file;
  std::string server_name;  // as SecurityOptions::tls_server_name
};
// INVALID_ARGUMENT naming the file that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::Channel>> DialPublic(const std::string& address,
                                                          const PublicClientOptions& options);
// A public client inside the cluster (tandem up, the tests) with the
// cluster's files: the cluster CA, its certificate and the api token.
absl::StatusOr<PublicClientOptions> ClusterPublicClientOptions(const SecurityOptions& options);

}  // namespace tandem
