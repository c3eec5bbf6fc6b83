// A local cluster scraped by a real Prometheus server (Debian's), loaded
// with requests: every PromQL expression of the dashboard and the rules
// returns data, request and token counts match what the client saw, and
// TTFT agrees with the client's within a histogram bucket.
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/default_model/test_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/cluster_test_util.h"
#include "tests/testing/paths.h"
#include "tests/testing/temp_dir.h"
#include "tools/cli/local_cluster.h"

namespace tandem {
namespace {

int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Runs one of tests/js's scripts with node; returns its exit status (0 when
// it succeeded) and its output in *out.
int RunNode(const std::string& script_and_args, std::string* out) {
  const std::string cmd = absl::StrCat("node ", testing::SourceDir(), "/tests/js/", script_and_args, " 2>&1");
  FILE* f = popen(cmd.c_str(), "r");
  if (f == nullptr) return -1;
  std::string text;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, f)) text.append(buf, n);
  const int status = pclose(f);
  if (out != nullptr) *out = text;
  return status;
}

// A child process that dies with the test.
class Child {
 public:
  explicit Child(std::vector<std::string> argv, const std::string& log) {
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      FILE* f = fopen(log.c_str(), "w");
      if (f) {
        dup2(fileno(f), 1);
        dup2(fileno(f), 2);
      }
      std::vector<char*> args;
      for (std::string& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }

 private:
  pid_t pid_ = -1;
};

TEST(ObservabilityTest, DashboardAndRulesHaveDataAndMetricsMatchTheClient) {
  testing::TempDir model, logs, prom_dir;
  ASSERT_TRUE(WriteTestModel(model.str()).ok());
  LocalClusterOptions o;
  o.security = testing::TestSecurity();  // TANDEM_TEST_TLS=1: mutual TLS and tokens
  o.model_dir = model.str();
  o.bin_dir = testing::BinDir();
  o.log_dir = logs.str();
  o.router_args = {"--slo_ttft_seconds=0.5", "--slo_tpot_seconds=0.05"};
  o.prefill_args = {"--num_threads=1"};
  o.decode_args = {"--num_threads=1"};
  auto cluster = LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();

  // Prometheus scraping every process each second, with tandem's rules.
  const int prom_port = FreePort();
  std::string targets;
  for (const std::string& a : (*cluster)->metrics_addresses()) targets += absl::StrCat("'", a, "',");
  const std::string config = (prom_dir.path() / "prometheus.yml").string();
  std::ofstream(config) << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        << "rule_files:\n  - " << testing::SourceDir() << "/deploy/prometheus/tandem-rules.yaml\n"
                        << "scrape_configs:\n  - job_name: tandem\n    static_configs:\n      - targets: ["
                        << targets << "]\n";
  Child prometheus({"prometheus", "--config.file=" + config,
                    "--storage.tsdb.path=" + (prom_dir.path() / "data").string(),
                    absl::StrCat("--web.listen-address=127.0.0.1:", prom_port)},
                   (logs.path() / "prometheus.log").string());

  // rate() needs samples from before the load: wait until Prometheus has
  // scraped every process of the idle cluster, and spread the load over
  // seconds.
  std::string wait_out;
  const int targets_up = RunNode(absl::StrCat("wait_prometheus_targets.mjs http://127.0.0.1:", prom_port, " ",
                                              (*cluster)->metrics_addresses().size(), " 60"),
                                 &wait_out);
  ASSERT_EQ(targets_up, 0) << wait_out << "\nprometheus log: "
                           << testing::ReadFile((logs.path() / "prometheus.log").string());

  // Load: successful requests of several lengths, and some refused ones.
  auto stub = testing::RouterStub((*cluster)->router_address());
  nlohmann::json client;
  int ok = 0, tokens = 0;
  std::vector<double> ttfts;
  for (int i = 0; i < 16; ++i) {
    testing::RequestSpec s;
    s.prompt = absl::StrCat("request number ", i, " says");
    s.max_new_tokens = 2 + i % 7;
    v1::GenerateRequest req = testing::ToGenerateRequest(s);
    if (i % 5 == 4) req.mutable_sampling()->set_top_p(-1);  // INVALID_ARGUMENT
    const auto start = std::chrono::steady_clock::now();
    grpc::ClientContext ctx;
    auto reader = stub->Generate(&ctx, req);
    v1::GenerateResponse resp;
    bool first = true;
    int n = 0;
    while (reader->Read(&resp)) {
      if (first) {
        ttfts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        first = false;
      }
      n += resp.tokens_size();
    }
    if (reader->Finish().ok()) {
      ++ok;
      tokens += n;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_EQ(ok, 13);
  client["ok_requests"] = ok;
  client["generated_tokens"] = tokens;
  client["ttft_seconds"] = ttfts;
  const std::string client_file = (prom_dir.path() / "client.json").string();
  std::ofstream(client_file) << client.dump();

  std::string out;
  EXPECT_EQ(RunNode(absl::StrCat("check_promql.mjs http://127.0.0.1:", prom_port, " ", testing::SourceDir(), " ",
                                 client_file),
                    &out),
            0)
      << out << "\nprometheus log: " << testing::ReadFile((logs.path() / "prometheus.log").string());
  // No KV block left in use on any worker once the load is over.
  absl::Status no_leak = testing::WaitForNoUsedBlocks((*cluster)->decode_addresses(), (*cluster)->prefill_addresses());
  EXPECT_TRUE(no_leak.ok()) << no_leak;
  EXPECT_TRUE((*cluster)->Stop().ok());
}

}  // namespace
}  // namespace tandem
