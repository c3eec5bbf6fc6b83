// The router's OpenAI-compatible HTTP API, beside its gRPC API:
// POST /v1/completions, POST /v1/chat/completions (streaming as server-sent
// events and not), GET /v1/models, GET /health. Every generation goes
// through GenerationServiceImpl::Serve, the gRPC Generate's own path.
//
// Threads: cpp-httplib serves each connection on a thread of its pool
// (`threads`); a request's choices run on a ChoiceRunner's threads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "router/generation_service.h"
#include "router/http/openai_request.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}

namespace tandem::router::http {

struct OpenAiServerOptions {
  std::string listen = "0.0.0.0:8080";  // host:port; port 0 picks a free one
  // Connections served at once (each holds a thread while its request
  // runs); more wait to be accepted.
  int threads = 512;
  // "Authorization: Bearer <api_token>" required on every route but
  // /health; empty: none (the router's --api_token_file).
  std::string api_token;
  // Both set: HTTPS with this certificate chain and key (the router's
  // --tls_cert/--tls_key).
  std::string tls_cert_file, tls_key_file;
  std::string served_model_name;
  // The chat prompt of a request (its messages through the model's chat
  // template); null: chat requests get 400 with `no_chat_reason`.
  std::function<absl::StatusOr<std::string>(const OpenAiRequest&)> render_chat;
  std::string no_chat_reason = "the model has no chat template; use /v1/completions";
};

class OpenAiServer {
 public:
  // INVALID_ARGUMENT for a bad listen address, UNAVAILABLE when it cannot
  // bind. `router` and `service` outlive the server.
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> Start(OpenAiServerOptions options, RouterContext& router,
                                                             GenerationServiceImpl& service);
  ~OpenAiServer();
  int port() const { return port_; }
  // Stops accepting and waits for requests in progress to end.
  void Stop();

 private:
  OpenAiServer(OpenAiServerOptions options, RouterContext& router, GenerationServiceImpl& service);
  void Routes();
  // POST /v1/completions and /v1/chat/completions.
  void Generate(ApiKind kind, const httplib::Request& req, httplib::Response& res);

  OpenAiServerOptions options_;
  RouterContext& router_;
  GenerationServiceImpl& service_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  int port_ = 0;
};

}  // namespace tandem::router::http
