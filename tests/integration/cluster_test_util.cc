#include "tests/integration/cluster_test_util.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/default_model/default_model.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "nlohmann/json.hpp"
#include "tests/testing/paths.h"
#include "tests/testing/temp_dir.h"
#include "tests/testing/test_certs.h"

namespace tandem::testing {

std::string BinDir() { return BinaryDir() + "/bin"; }

absl::StatusOr<std::string> HttpGet(const std::string& address, const std::string& path) {
  const size_t colon = address.rfind(':');
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(address.substr(0, colon).c_str(), address.substr(colon + 1).c_str(), &hints, &res) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", address));
  }
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const bool connected = connect(fd, res->ai_addr, res->ai_addrlen) == 0;
  freeaddrinfo(res);
  if (!connected) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  }
  const std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return absl::UnavailableError("write failed");
  }
  std::string out;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = out.find("\r\n\r\n");
  if (out.compare(0, 12, "HTTP/1.1 200") != 0 && out.compare(0, 12, "HTTP/1.0 200") != 0) {
    return absl::UnavailableError(absl::StrCat("GET ", path, ": ", out.substr(0, out.find('\r'))));
  }
  return body == std::string::npos ? "" : out.substr(body + 4);
}

double SumMetric(const std::string& text, const std::string& name, const std::vector<std::string>& labels) {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, name.size(), name) != 0 || line.size() <= name.size()) continue;
    if (line[name.size()] != '{' && line[name.size()] != ' ') continue;
    bool all = true;
    for (const std::string& l : labels) all = all && line.find(l) != std::string::npos;
    if (all) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

// The last `lines` lines of the file at `path`.
std::string LogTail(const std::string& path, int lines) {
  const std::string log = ReadFile(path);
  size_t from = log.size();
  for (int n = 0; from > 0 && n < lines; ++n) {
    from = log.rfind('\n', from - 1);
    if (from == std::string::npos) return log;
  }
  return log.substr(from);
}

}  // namespace

std::string LogTails(const std::string& log_dir, int lines) {
  std::vector<std::string> logs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(log_dir, ec)) {
    if (e.path().extension() == ".log") logs.push_back(e.path().string());
  }
  std::sort(logs.begin(), logs.end());
  std::string out;
  for (const std::string& path : logs) {
    absl::StrAppend(&out, "---- ", std::filesystem::path(path).filename().string(), " (last ", lines, " lines)\n",
                    LogTail(path, lines), "\n");
  }
  return out;
}

absl::Status WriteDefaultModelWithChatTemplate(const std::string& dir, const std::string& chat_template) {
  if (absl::Status s = WriteDefaultModel(dir); !s.ok()) return s;
  const std::string config_path = dir + "/tokenizer_config.json";
  nlohmann::json config = nlohmann::json::parse(ReadFile(config_path), nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return absl::InternalError(config_path + " is not JSON");
  config["chat_template"] = chat_template;
  std::ofstream out(config_path);
  out << config.dump(2);
  return out ? absl::OkStatus() : absl::InternalError("cannot write " + config_path);
}

v1::GenerateRequest ToGenerateRequest(const RequestSpec& spec) {
  v1::GenerateRequest r;
  r.set_text(spec.prompt);
  r.mutable_sampling()->set_temperature(spec.temperature);
  r.mutable_sampling()->set_top_p(spec.top_p);
  r.mutable_sampling()->set_top_k(spec.top_k);
  if (spec.seed >= 0) r.mutable_sampling()->set_seed(static_cast<uint64_t>(spec.seed));
  r.mutable_stopping()->set_max_new_tokens(spec.max_new_tokens);
  r.mutable_stopping()->set_ignore_eos(spec.ignore_eos);
  for (const std::string& s : spec.stop) r.mutable_stopping()->add_stop(s);
  return r;
}

bool TestTlsMode() {
  const char* v = std::getenv("TANDEM_TEST_TLS");
  return v != nullptr && std::string(v) == "1";
}

const SecurityOptions& TestSecurity() {
  static const SecurityOptions* options = [] {
    auto* o = new SecurityOptions();
    if (!TestTlsMode()) return o;
    // Lives until the test binary exits; the processes read the files at start.
    static TempDir* dir = new TempDir();
    absl::StatusOr<TestCerts> certs = MakeTestCerts(dir->str());
    if (!certs.ok()) {
      std::fprintf(stderr, "TANDEM_TEST_TLS=1: %s\n", certs.status().ToString().c_str());
      std::abort();
    }
    o->tls_cert_file = certs->cert;
    o->tls_key_file = certs->key;
    o->tls_client_ca_file = certs->ca;
    o->cluster_token_file = dir->str() + "/cluster.token";
    o->api_token_file = dir->str() + "/api.token";
    std::ofstream(o->cluster_token_file) << "test-cluster-token\n";
    std::ofstream(o->api_token_file) << "test-api-token\n";
    return o;
  }();
  return *options;
}

std::shared_ptr<grpc::Channel> ClusterChannel(const std::string& address) {
  static const std::shared_ptr<const ClusterSecurity> security = [] {
    absl::StatusOr<std::shared_ptr<const ClusterSecurity>> s = ClusterSecurity::Load(TestSecurity());
    if (!s.ok()) {
      std::fprintf(stderr, "test security: %s\n", s.status().ToString().c_str());
      std::abort();
    }
    return *s;
  }();
  return security->Dial(address);
}

std::unique_ptr<v1::GenerationService::Stub> RouterStub(const std::string& address) {
  absl::StatusOr<PublicClientOptions> client = ClusterPublicClientOptions(TestSecurity());
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      client.ok() ? DialPublic(address, *client) : absl::StatusOr<std::shared_ptr<grpc::Channel>>(client.status());
  if (!channel.ok()) {
    std::fprintf(stderr, "router channel: %s\n", channel.status().ToString().c_str());
    std::abort();
  }
  return v1::GenerationService::NewStub(*channel);
}

StreamResult StreamGenerate(v1::GenerationService::Stub& stub, const v1::GenerateRequest& req,
                            int cancel_after_tokens, absl::Duration deadline) {
  StreamResult out;
  grpc::ClientContext ctx;
  if (deadline != absl::InfiniteDuration()) {
    ctx.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(deadline));
  }
  auto reader = stub.Generate(&ctx, req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
    for (const v1::GeneratedToken& t : resp.tokens()) {
      out.tokens.push_back(t.id());
      out.text += t.text();
    }
    out.text += resp.text_tail();
    if (resp.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      out.finish_reason = resp.finish_reason();
      out.decode_worker = resp.decode_worker();
      out.prefill_worker = resp.prefill_worker();
    }
    if (cancel_after_tokens >= 0 && static_cast<int>(out.tokens.size()) >= cancel_after_tokens) {
      ctx.TryCancel();
    }
  }
  out.status = reader->Finish();
  return out;
}

std::vector<std::vector<int32_t>> MonolithicTokens(const std::string& model_dir,
                                                   const RequestSpec& spec,
                                                   const std::vector<std::string>& prompts) {
  std::vector<std::string> args = {
      BinDir() + "/tandem", "generate", "--output=jsonl", "--model=" + model_dir,
      absl::StrCat("--temperature=", spec.temperature), absl::StrCat("--top_p=", spec.top_p),
      absl::StrCat("--top_k=", spec.top_k), absl::StrCat("--seed=", spec.seed),
      absl::StrCat("--max_new_tokens=", spec.max_new_tokens),
      absl::StrCat("--ignore_eos=", spec.ignore_eos ? "true" : "false"), "--threads=1"};
  if (!spec.stop.empty()) args.push_back("--stop=" + absl::StrJoin(spec.stop, ","));
  std::string cmd;
  for (const std::string& a : args) cmd += "'" + a + "' ";
  for (const std::string& p : prompts) cmd += "'" + p + "' ";
  cmd += "2>/dev/null";
  std::vector<std::vector<int32_t>> tokens(prompts.size());
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return tokens;
  std::string line;
  char buf[4096];
  std::string all;
  while (size_t n = fread(buf, 1, sizeof buf, f)) all.append(buf, n);
  pclose(f);
  std::istringstream in(all);
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("token")) continue;
    tokens[j["request"].get<size_t>()].push_back(j["token"].get<int32_t>());
  }
  return tokens;
}

template <typename Service>
absl::StatusOr<v1::LoadReport> GetLoad(const std::string& address) {
  auto stub = Service::NewStub(ClusterChannel(address));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::LoadReport r;
  grpc::Status s = stub->GetLoad(&ctx, v1::GetLoadRequest(), &r);
  if (!s.ok()) return absl::UnavailableError(absl::StrCat(address, ": ", s.error_message()));
  return r;
}

absl::StatusOr<v1::LoadReport> DecodeLoad(const std::string& address) {
  return GetLoad<v1::DecodeService>(address);
}
absl::StatusOr<v1::LoadReport> PrefillLoad(const std::string& address) {
  return GetLoad<v1::PrefillService>(address);
}

absl::Status WaitForNoUsedBlocks(const std::vector<std::string>& decode,
                                 const std::vector<std::string>& prefill, absl::Duration timeout) {
  const absl::Time give_up = absl::Now() + timeout;
  std::string last;
  while (absl::Now() < give_up) {
    last.clear();
    for (const std::string& a : decode) {
      absl::StatusOr<v1::LoadReport> r = DecodeLoad(a);
      if (!r.ok() || r->kv_blocks_used() != 0) {
        last += absl::StrCat(" decode ", a, ": ", r.ok() ? absl::StrCat(r->kv_blocks_used(), " used")
                                                          : r.status().ToString());
      }
    }
    for (const std::string& a : prefill) {
      absl::StatusOr<v1::LoadReport> r = PrefillLoad(a);
      if (!r.ok() || r->kv_blocks_used() != 0) {
        last += absl::StrCat(" prefill ", a, ": ", r.ok() ? absl::StrCat(r->kv_blocks_used(), " used")
                                                           : r.status().ToString());
      }
    }
    if (last.empty()) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::InternalError(absl::StrCat("KV blocks still in use:", last));
}

}  // namespace tandem::testing
