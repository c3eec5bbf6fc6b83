#include "common/rpc/tls_credentials.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/rpc/metadata_interceptor.h"
#include "grpc/grpc_security.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace tandem {
namespace {

absl::StatusOr<std::string> ReadFlagFile(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path, ": ", std::strerror(errno)));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Catches the usual mistake (a path to the wrong file) at start with the
// flag's name; gRPC's own parse errors name neither flag nor file.
absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path, std::string_view kind) {
  absl::StatusOr<std::string> pem = ReadFlagFile(flag, path);
  if (!pem.ok()) return pem.status();
  if (pem->find("-----BEGIN ") == std::string::npos || pem->find(kind) == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " holds no PEM ", std::string(kind)));
  }
  return pem;
}

absl::StatusOr<std::string> ReadToken(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> token = ReadFlagFile(flag, path);
  if (!token.ok()) return token.status();
  // Files written by `echo` or editors end with a newline that is no part
  // of the secret.
  std::string t(absl::StripAsciiWhitespace(*token));
  if (t.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is empty"));
  return t;
}

// A grpc::ServerCredentials over a core grpc_server_credentials. The C++
// InsecureServerCredentials() refuses a metadata processor, but the
// cluster and api tokens must be checked on plaintext ports too; core
// credentials of either kind accept one, and a ServerCredentials adds its
// port through this (private, overridable) virtual.
class CoreServerCredentials final : public grpc::ServerCredentials {
 public:
  CoreServerCredentials(grpc_server_credentials* creds, const AuthPolicy& policy) : creds_(creds) {
    if (policy.checks_anything()) {
      // Owned by the core credentials, which call Destroy when released.
      grpc_auth_metadata_processor p{&Process, &Destroy, new AuthPolicy(policy)};
      grpc_server_credentials_set_auth_metadata_processor(creds_, p);
    }
  }
  ~CoreServerCredentials() override { grpc_server_credentials_release(creds_); }

  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    // The policy is attached at construction; a second processor would
    // silently replace it.
    std::abort();
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }

  static void Process(void* state, grpc_auth_context* context, const grpc_metadata* md, size_t num_md,
                      grpc_process_auth_metadata_done_cb done, void* user_data) {
    const auto* policy = static_cast<const AuthPolicy*>(state);
    CallFacts call;
    auto view = [](const grpc_slice& s) {
      return std::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(s)), GRPC_SLICE_LENGTH(s));
    };
    for (size_t i = 0; i < num_md; ++i) {
      const std::string_view key = view(md[i].key);
      if (key == ":path") call.path = view(md[i].value);
      if (key == kAuthorizationKey) call.authorization = view(md[i].value);
      if (key == kClusterTokenKey) call.cluster_token = view(md[i].value);
    }
    // Present only when the handshake verified a client certificate
    // against the configured CA: a certificate from another CA fails the
    // handshake, and none leaves this empty.
    grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(context, GRPC_X509_PEM_CERT_PROPERTY_NAME);
    call.peer_has_cluster_certificate = grpc_auth_property_iterator_next(&it) != nullptr;
    const grpc::Status s = Authorize(*policy, call);
    done(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(s.error_code()),
         s.ok() ? nullptr : s.error_message().c_str());
  }
  static void Destroy(void* state) { delete static_cast<AuthPolicy*>(state); }

  grpc_server_credentials* const creds_;
};

}  // namespace

std::shared_ptr<const ClusterSecurity> ClusterSecurity::Plaintext() {
  return std::shared_ptr<const ClusterSecurity>(new ClusterSecurity());
}

absl::StatusOr<std::shared_ptr<const ClusterSecurity>> ClusterSecurity::Load(const SecurityOptions& o) {
  std::shared_ptr<ClusterSecurity> s(new ClusterSecurity());
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    return absl::InvalidArgumentError(o.tls_cert_file.empty() ? "--tls_key needs --tls_cert"
                                                              : "--tls_cert needs --tls_key");
  }
  if (!o.tls_client_ca_file.empty() && o.tls_cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca needs --tls_cert and --tls_key (mutual TLS: this process proves itself too)");
  }
  if (!o.tls_server_name.empty() && o.tls_cert_file.empty()) {
    return absl::InvalidArgumentError("--tls_server_name needs --tls_cert and --tls_key");
  }
  if (!o.api_token.empty() && !o.api_token_file.empty()) {
    return absl::InvalidArgumentError("--api_token and --api_token_file: give one");
  }
  if (!o.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("tls_cert", o.tls_cert_file, "CERTIFICATE");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("tls_key", o.tls_key_file, "PRIVATE KEY");
    if (!key.ok()) return key.status();
    s->cert_pem_ = std::move(*cert);
    s->key_pem_ = std::move(*key);
  }
  if (!o.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls_client_ca", o.tls_client_ca_file, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    s->ca_pem_ = std::move(*ca);
    s->policy_.require_cluster_certificate = true;
  }
  s->server_name_ = o.tls_server_name;
  if (!o.cluster_token_file.empty()) {
    absl::StatusOr<std::string> t = ReadToken("cluster_token_file", o.cluster_token_file);
    if (!t.ok()) return t.status();
    s->policy_.cluster_token = std::move(*t);
  }
  if (!o.api_token_file.empty()) {
    absl::StatusOr<std::string> t = ReadToken("api_token_file", o.api_token_file);
    if (!t.ok()) return t.status();
    s->policy_.api_token = std::move(*t);
  } else if (!o.api_token.empty()) {
    s->policy_.api_token = o.api_token;
  }
  return std::shared_ptr<const ClusterSecurity>(std::move(s));
}

std::string ClusterSecurity::Describe() const {
  std::vector<std::string> parts = {mutual_tls() ? "mutual TLS" : tls() ? "TLS" : "plaintext"};
  if (!policy_.cluster_token.empty()) parts.push_back("cluster token");
  if (!policy_.api_token.empty()) parts.push_back("api token");
  return absl::StrJoin(parts, " + ");
}

std::shared_ptr<grpc::ServerCredentials> ClusterSecurity::ServerCredentials(ClientCertificates client_certs) const {
  grpc_server_credentials* creds = nullptr;
  if (!tls()) {
    creds = grpc_insecure_server_credentials_create();
  } else {
    grpc_ssl_pem_key_cert_pair pair{key_pem_.c_str(), cert_pem_.c_str()};
    grpc_ssl_client_certificate_request_type request = GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
    if (mutual_tls()) {
      request = client_certs == ClientCertificates::kRequire
                    ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                    : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY;
    }
    creds = grpc_ssl_server_credentials_create_ex(mutual_tls() ? ca_pem_.c_str() : nullptr, &pair, 1, request,
                                                  nullptr);
  }
  return std::make_shared<CoreServerCredentials>(creds, policy_);
}

std::shared_ptr<grpc::Channel> ClusterSecurity::Dial(const std::string& address) const {
  grpc::ChannelArguments args;
  // A peer that restarts (a router, a worker) is back within a second:
  // gRPC's default reconnect backoff grows to two minutes, which kept
  // workers away from a restarted router for tens of seconds.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (tls()) {
    grpc::SslCredentialsOptions ssl;
    // Without a cluster CA the system roots verify peers.
    ssl.pem_root_certs = ca_pem_;
    ssl.pem_cert_chain = cert_pem_;
    ssl.pem_private_key = key_pem_;
    creds = grpc::SslCredentials(ssl);
    if (!server_name_.empty()) args.SetSslTargetNameOverride(server_name_);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!policy_.cluster_token.empty()) {
    interceptors.push_back(MakeMetadataInterceptorFactory(std::string(kClusterTokenKey), policy_.cluster_token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, args, std::move(interceptors));
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> DialPublic(const std::string& address,
                                                          const PublicClientOptions& o) {
  grpc::ChannelArguments args;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (o.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!o.ca_file.empty()) {
      absl::StatusOr<std::string> ca = ReadPem("tls_ca", o.ca_file, "CERTIFICATE");
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = std::move(*ca);
    }
    if (!o.cert_file.empty()) {
      absl::StatusOr<std::string> cert = ReadPem("tls_cert", o.cert_file, "CERTIFICATE");
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadPem("tls_key", o.key_file, "PRIVATE KEY");
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = std::move(*cert);
      ssl.pem_private_key = std::move(*key);
    }
    creds = grpc::SslCredentials(ssl);
    if (!o.server_name.empty()) args.SetSslTargetNameOverride(o.server_name);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!o.token.empty()) {
    interceptors.push_back(MakeMetadataInterceptorFactory(std::string(kAuthorizationKey), "Bearer " + o.token));
  }
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, args, std::move(interceptors));
}

absl::StatusOr<PublicClientOptions> ClusterPublicClientOptions(const SecurityOptions& o) {
  PublicClientOptions c;
  if (!o.tls_cert_file.empty()) {
    // Without a cluster CA the router's certificate is checked against the
    // system roots, as any public client would.
    c.tls = true;
    c.ca_file = o.tls_client_ca_file;
    c.cert_file = o.tls_cert_file;
    c.key_file = o.tls_key_file;
    c.server_name = o.tls_server_name;
  }
  c.token = o.api_token;
  if (!o.api_token_file.empty()) {
    absl::StatusOr<std::string> t = ReadToken("api_token_file", o.api_token_file);
    if (!t.ok()) return t.status();
    c.token = std::move(*t);
  }
  return c;
}

}  // namespace tandem
