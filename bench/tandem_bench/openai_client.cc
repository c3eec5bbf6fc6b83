#include "bench/tandem_bench/openai_client.h"

#include <httplib.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "bench/tandem_bench/load_runner.h"
#include "nlohmann/json.hpp"

namespace tandem::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

std::unique_ptr<httplib::Client> MakeClient(const std::string& scheme_host_port, const std::string& api_key,
                                            const std::string& ca_file, double timeout_seconds) {
  auto c = std::make_unique<httplib::Client>(scheme_host_port);
  if (!ca_file.empty()) c->set_ca_cert_path(ca_file.c_str());
  if (absl::StartsWith(scheme_host_port, "https://")) c->enable_server_certificate_verification(true);
  if (!api_key.empty()) c->set_bearer_token_auth(api_key.c_str());
  const time_t sec = timeout_seconds > 0 ? static_cast<time_t>(timeout_seconds) + 1 : 3600;
  c->set_read_timeout(sec, 0);
  c->set_connection_timeout(10, 0);
  return c;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiBenchClient>> OpenAiBenchClient::Create(const std::string& endpoint,
                                                                               const std::string& api_key,
                                                                               const std::string& ca_file) {
  const size_t scheme_end = endpoint.find("://");
  if (scheme_end == std::string::npos ||
      !(absl::StartsWith(endpoint, "http://") || absl::StartsWith(endpoint, "https://"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--endpoint '", endpoint, "' is not http://HOST:PORT/v1 (or https://)"));
  }
  const size_t path = endpoint.find('/', scheme_end + 3);
  std::unique_ptr<OpenAiBenchClient> c(new OpenAiBenchClient());
  c->scheme_host_port_ = endpoint.substr(0, path);
  c->base_path_ = path == std::string::npos ? "" : endpoint.substr(path);
  while (!c->base_path_.empty() && c->base_path_.back() == '/') c->base_path_.pop_back();
  c->api_key_ = api_key;
  c->ca_file_ = ca_file;
  return c;
}

absl::StatusOr<OpenAiModel> OpenAiBenchClient::Model() const {
  auto c = MakeClient(scheme_host_port_, api_key_, ca_file_, 10);
  httplib::Result r = c->Get((base_path_ + "/models").c_str());
  if (!r) return absl::UnavailableError(absl::StrCat("cannot reach ", scheme_host_port_, ": ", httplib::to_string(r.error())));
  if (r->status != 200) return absl::UnavailableError(absl::StrCat("GET ", base_path_, "/models: HTTP ", r->status));
  json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.contains("data") || !j["data"].is_array() || j["data"].empty()) {
    return absl::UnavailableError(absl::StrCat("GET ", base_path_, "/models lists no model"));
  }
  const json& m = j["data"][0];
  OpenAiModel out;
  out.id = m.value("id", "");
  if (m.contains("max_model_len") && m["max_model_len"].is_number_integer()) out.max_model_len = m["max_model_len"];
  if (m.contains("vocab_size") && m["vocab_size"].is_number_integer()) out.vocab_size = m["vocab_size"];
  return out;
}

void OpenAiBenchClient::Generate(std::span<const int32_t> prompt, int32_t output_tokens, double deadline_seconds,
                                 RequestRecord& rec) {
  json body = {{"model", model_},
               {"prompt", std::vector<int32_t>(prompt.begin(), prompt.end())},
               {"max_tokens", output_tokens},
               {"temperature", 0},
               {"ignore_eos", true},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  auto c = MakeClient(scheme_host_port_, api_key_, ca_file_, deadline_seconds);
  httplib::Request req;
  req.method = "POST";
  req.path = base_path_ + "/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.set_header("Accept", "text/event-stream");
  const Clock::time_point sent = Clock::now();
  std::string pending;  // bytes of an event not yet complete
  int64_t usage_tokens = -1;
  std::string error;
  bool done = false;
  std::string error_body;  // a non-200 answer's body
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    const double at = std::chrono::duration<double>(Clock::now() - sent).count();
    pending.append(data, n);
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
      const std::string event = pending.substr(0, end);
      if (!absl::StartsWith(event, "data:")) {
        error_body += event;  // comments, or a JSON error body
        continue;
      }
      std::string payload = event.substr(5);
      if (!payload.empty() && payload.front() == ' ') payload.erase(0, 1);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      json chunk = json::parse(payload, nullptr, false);
      if (chunk.is_discarded()) continue;
      if (chunk.contains("error")) error = chunk["error"].value("message", "error event");
      if (chunk.contains("choices") && chunk["choices"].is_array() && !chunk["choices"].empty()) {
        rec.tokens.push_back(at);
      } else if (chunk.contains("usage") && chunk["usage"].is_object()) {
        usage_tokens = chunk["usage"].value("completion_tokens", int64_t{-1});
      }
    }
    if (pending.size() > (1 << 20)) error_body += pending, pending.clear();
    return true;
  };
  httplib::Response res;
  httplib::Error err = httplib::Error::Success;
  const bool sent_ok = c->send(req, res, err);
  if (!sent_ok) {
    rec.ok = false;
    rec.error = absl::StrCat("HTTP: ", httplib::to_string(err));
    return;
  }
  if (res.status != 200) {
    json j = json::parse(error_body + pending, nullptr, false);
    rec.ok = false;
    rec.error = absl::StrCat("HTTP ", res.status, ": ",
                             !j.is_discarded() && j.contains("error") ? j["error"].value("message", "") : "");
    return;
  }
  if (!error.empty() || !done) {
    rec.ok = false;
    rec.error = error.empty() ? "the stream ended without [DONE]" : error;
    return;
  }
  // The usage chunk's count is the truth; chunks may carry several tokens
  // (those arrive with the last chunk) or none (a finish-only chunk).
  if (usage_tokens >= 0 && !rec.tokens.empty()) {
    const double last = rec.tokens.back();
    rec.tokens.resize(static_cast<size_t>(std::max<int64_t>(usage_tokens, 1)), last);
    rec.tokens.back() = last;
  }
  rec.ok = !rec.tokens.empty();
  if (!rec.ok) rec.error = "no output";
}

}  // namespace tandem::bench
