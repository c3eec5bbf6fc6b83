#include "router/http/openai_server.h"

#include <httplib.h>
#include <signal.h>

#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/request/cache_salt.h"
#include "common/request/request_validation.h"
#include "common/rpc/auth_policy.h"
#include "common/util/logging.h"
#include "router/http/choice_runner.h"
#include "router/http/connection_watch.h"
#include "router/http/openai_response.h"

namespace tandem::router::http {
namespace {

using nlohmann::json;

constexpr char kJson[] = "application/json";

void SendError(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(ErrorBody(e), kJson);
}

void SendStatus(httplib::Response& res, const absl::Status& s) { SendError(res, ApiErrorFromStatus(s)); }

std::string RandomId(const char* prefix) {
  static thread_local std::mt19937_64 gen(std::random_device{}());
  return absl::StrFormat("%s%016x", prefix, gen());
}

int64_t UnixNow() { return absl::ToUnixSeconds(absl::Now()); }

// Everything one streaming response needs after its handler returned:
// httplib calls the content provider later on the same connection thread,
// and drops it (and so this, whose runner joins every call) when the
// response is done or the client left.
struct StreamState {
  std::unique_ptr<ChoiceRunner> runner;
  OpenAiRequest request;
  ResponseHeader header;
  std::optional<ChoiceRunner::Event> first;  // the event the handler waited for
  std::vector<bool> started;                 // chat: the role went out
  std::vector<int> text_offset;              // completions' logprobs text_offset
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

// A chunk per response that carries tokens, even when their text is held
// back (a partial character, a possible stop string): clients count
// chunks as tokens (inter-token latency) and time the first from it.
bool ChunkWorthSending(const OpenAiRequest& r, const v1::GenerateResponse& resp, const ChoiceDelta& d, bool first) {
  return resp.tokens_size() > 0 || !d.text.empty() || !d.finish_reason.empty() || (r.kind == ApiKind::kChat && first);
}

// Writes one runner event as SSE; false when the client is gone.
bool WriteEvent(StreamState& st, const ChoiceRunner::Event& e, const Tokenizer& tokenizer, httplib::DataSink& sink) {
  std::string out;
  if (e.done) {
    if (e.status.ok()) return true;
    // The stream has begun (status 200 went out): a later failure of one
    // choice is an error event, as OpenAI-compatible servers send it.
    out = SseEvent(json::parse(ErrorBody(ApiErrorFromGrpc(e.status))));
  } else {
    ChoiceDelta d = DeltaOf(e.response, tokenizer);
    const bool first = !st.started[e.index];
    if (!ChunkWorthSending(st.request, e.response, d, first)) return true;
    st.started[e.index] = true;
    if (!d.finish_reason.empty()) {
      st.prompt_tokens = d.prompt_tokens;
      st.completion_tokens += d.completion_tokens;
    }
    out = SseEvent(StreamChunk(st.request.kind, st.header, e.index, d, st.request.logprobs, first,
                               st.request.include_usage, st.text_offset[e.index]));
    st.text_offset[e.index] += static_cast<int>(d.text.size());
  }
  return sink.write(out.data(), out.size());
}

}  // namespace

OpenAiServer::OpenAiServer(OpenAiServerOptions options, RouterContext& router, GenerationServiceImpl& service)
    : options_(std::move(options)), router_(router), service_(service) {}

OpenAiServer::~OpenAiServer() { Stop(); }

void OpenAiServer::Stop() {
  if (server_ != nullptr) server_->stop();
  if (listener_.joinable()) listener_.join();
}

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(OpenAiServerOptions options, RouterContext& router,
                                                                  GenerationServiceImpl& service) {
  const size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--http_listen '", options.listen, "' is not host:port"));
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (options.threads < 1) return absl::InvalidArgumentError("--http_threads must be >= 1");
  // A client that left mid-response must fail our write (EPIPE), not kill
  // the process: OpenSSL's writes do not pass MSG_NOSIGNAL.
  signal(SIGPIPE, SIG_IGN);
  std::unique_ptr<OpenAiServer> s(new OpenAiServer(std::move(options), router, service));
  const OpenAiServerOptions& o = s->options_;
  if (!o.tls_cert_file.empty() && !o.tls_key_file.empty()) {
    s->server_ = std::make_unique<httplib::SSLServer>(o.tls_cert_file.c_str(), o.tls_key_file.c_str());
  } else {
    s->server_ = std::make_unique<httplib::Server>();
  }
  if (!s->server_->is_valid()) return absl::InvalidArgumentError("the HTTP server cannot use --tls_cert/--tls_key");
  const int threads = o.threads;
  s->server_->new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  // A prompt is at most kMaxPromptBytes; JSON escaping can double it.
  s->server_->set_payload_max_length(2 * kMaxPromptBytes + (64 << 10));
  s->Routes();
  s->port_ = port == 0 ? s->server_->bind_to_any_port(host) : (s->server_->bind_to_port(host, port) ? port : -1);
  if (s->port_ <= 0) return absl::UnavailableError(absl::StrCat("cannot listen for HTTP on ", s->options_.listen));
  httplib::Server* server = s->server_.get();
  s->listener_ = std::thread([server] { server->listen_after_bind(); });
  return s;
}

void OpenAiServer::Routes() {
  httplib::Server& svr = *server_;
  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options_.api_token.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "Bearer ";
    if (auth.size() > kBearer.size() && auth.compare(0, kBearer.size(), kBearer) == 0 &&
        ConstantTimeEquals(std::string_view(auth).substr(kBearer.size()), options_.api_token)) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    ApiError e = ApiErrorFromStatus(absl::UnauthenticatedError(
        auth.empty() ? "missing 'Authorization: Bearer <token>'" : "the bearer token is not valid"));
    e.code = "invalid_api_key";
    SendError(res, e);
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      SendError(res, ApiErrorFromStatus(absl::NotFoundError(absl::StrCat("no route ", req.method, " ", req.path))));
    }
  });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    // Ready only when a request could be placed (a live decode or
    // aggregated worker): Kubernetes' readiness probe asks this.
    if (service_.CanPlace()) {
      res.set_content(R"({"status":"ok"})", kJson);
    } else {
      SendStatus(res, absl::UnavailableError("no worker can serve a request yet"));
    }
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(ModelsList(options_.served_model_name, UnixNow(), router_.model.max_position_embeddings,
                               router_.model.vocab_size, router_.generation_defaults)
                        .dump(),
                    kJson);
  });
  svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(ApiKind::kCompletion, req, res);
  });
  svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    Generate(ApiKind::kChat, req, res);
  });
}

void OpenAiServer::Generate(ApiKind kind, const httplib::Request& req, httplib::Response& res) {
  absl::StatusOr<OpenAiRequest> parsed = ParseOpenAiRequest(kind, req.body);
  if (!parsed.ok()) return SendStatus(res, parsed.status());
  OpenAiRequest& r = *parsed;
  if (!r.model.empty() && r.model != options_.served_model_name) {
    absl::Status s = absl::NotFoundError(absl::StrCat("the model '", r.model, "' does not exist; this server serves '",
                                                      options_.served_model_name, "'"));
    s.SetPayload(std::string(kParamPayload), absl::Cord("model"));
    return SendStatus(res, s);
  }
  if (kind == ApiKind::kChat) {
    if (!options_.render_chat) {
      return SendStatus(res, ParamError("messages", options_.no_chat_reason));
    }
    absl::StatusOr<std::string> prompt = options_.render_chat(r);
    if (!prompt.ok()) return SendStatus(res, prompt.status());
    // The rendered text carries the template's special tokens (BOS among
    // them): tokenized without adding them again.
    r.generate.set_text(*prompt);
    r.generate.set_add_special_tokens(false);
  }

  ResponseHeader header{RandomId(kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-"), UnixNow(), options_.served_model_name};
  std::vector<v1::GenerateRequest> requests(r.n, r.generate);
  for (int i = 0; i < r.n; ++i) {
    requests[i].set_request_id(r.n == 1 ? header.id : absl::StrCat(header.id, "-", i));
    // Seeded choices differ from each other and repeat across requests.
    if (r.generate.sampling().has_seed()) requests[i].mutable_sampling()->set_seed(r.generate.sampling().seed() + i);
  }
  const ConnectionWatch watch(req.remote_addr, req.remote_port, req.local_port);
  auto runner = std::make_unique<ChoiceRunner>(service_, std::move(requests), [watch] { return watch.PeerClosed(); },
                                               std::string(BearerToken(req.get_header_value("Authorization"))));

  if (!r.stream) {
    std::vector<Choice> choices(r.n);
    std::optional<grpc::Status> failure;
    while (!runner->finished()) {
      std::optional<ChoiceRunner::Event> e = runner->Next(absl::Seconds(1));
      if (!e.has_value()) continue;
      if (!e->done) {
        choices[e->index].Add(DeltaOf(e->response, *router_.tokenizer));
      } else if (!e->status.ok() && !failure.has_value()) {
        failure = e->status;
        runner->Cancel();  // one choice failed: the answer is an error, the others stop
      }
    }
    if (failure.has_value()) return SendError(res, ApiErrorFromGrpc(*failure));
    res.set_content(CompletionResponse(kind, header, choices, r.logprobs).dump(-1, ' ', false,
                                                                              json::error_handler_t::replace),
                    kJson);
    return;
  }

  // Streaming: wait for the first event, so a request refused before any
  // token (validation, a full queue, no worker) gets its HTTP status.
  std::optional<ChoiceRunner::Event> first;
  while (!first.has_value() && !runner->finished()) first = runner->Next(absl::Seconds(1));
  if (first.has_value() && first->done && !first->status.ok()) {
    runner->Cancel();
    return SendError(res, ApiErrorFromGrpc(first->status));
  }
  auto st = std::make_shared<StreamState>();
  st->runner = std::move(runner);
  st->request = std::move(r);
  st->header = header;
  st->first = std::move(first);
  st->started.assign(st->request.n, false);
  st->text_offset.assign(st->request.n, 0);
  const Tokenizer* tokenizer = router_.tokenizer.get();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st, tokenizer](size_t, httplib::DataSink& sink) {
        if (st->first.has_value()) {
          ChoiceRunner::Event e = std::move(*st->first);
          st->first.reset();
          if (!WriteEvent(*st, e, *tokenizer, sink)) return false;
        }
        while (!st->runner->finished()) {
          std::optional<ChoiceRunner::Event> e = st->runner->Next(absl::Milliseconds(200));
          if (e.has_value() && !WriteEvent(*st, *e, *tokenizer, sink)) {
            st->runner->Cancel();
            return false;
          }
        }
        std::string tail;
        if (st->request.include_usage) {
          tail = SseEvent(UsageChunk(st->request.kind, st->header, st->prompt_tokens, st->completion_tokens));
        }
        tail += kSseDone;
        if (!sink.write(tail.data(), tail.size())) return false;
        sink.done();
        return true;
      },
      [st](bool success) {
        // The client left (or a write failed): stop every choice now; the
        // runner joins them when the last reference goes.
        if (!success) st->runner->Cancel();
      });
}

}  // namespace tandem::router::http
