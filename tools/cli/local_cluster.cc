#include "tools/cli/local_cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "tandem/v1/generate.grpc.pb.h"
#include "common/rpc/tls_flags.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {

namespace fs = std::filesystem;

std::string ExecutableDir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : exe.parent_path().string();
}

std::string LocalCluster::LogPath(const std::string& name) const {
  return options_.log_dir.empty() ? "" : (fs::path(options_.log_dir) / (name + ".log")).string();
}

absl::StatusOr<LocalCluster::Child> LocalCluster::Spawn(const std::string& name,
                                                        const std::string& binary,
                                                        const std::vector<std::string>& args,
                                                        const std::vector<std::pair<std::string, std::string>>& env) {
  const std::string path = (fs::path(options_.bin_dir) / binary).string();
  if (access(path.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot run ", path, " (build it first)"));
  }
  std::vector<std::string> argv_s = {path};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = LogPath(name);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    // No child outlives the launcher, even if it is SIGKILLed.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    // The launcher blocks SIGTERM/SIGINT to wait for them; children start
    // with them unblocked.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    if (!log.empty()) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 2);
        dup2(fd, 1);
        close(fd);
      }
    }
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    execv(argv[0], argv.data());
    _exit(127);
  }
  TANDEM_LOG(INFO) << "started " << name << " (pid " << pid << "): " << absl::StrJoin(argv_s, " ");
  return Child{name, pid, -1};
}

// The router's port file has its HTTP port on a third line; "" without one.
std::string RouterHttpAddress(const std::string& port_file) {
  std::ifstream in(port_file);
  int grpc_port = 0, metrics_port = 0, http_port = 0;
  return in >> grpc_port >> metrics_port >> http_port ? absl::StrCat("127.0.0.1:", http_port) : "";
}

absl::StatusOr<std::pair<int, int>> LocalCluster::WaitForPortFile(const std::string& path, const Child& child) {
  const absl::Time give_up = absl::Now() + options_.start_timeout;
  while (absl::Now() < give_up) {
    std::ifstream in(path);
    int port = 0, metrics = 0;
    if (in >> port >> metrics && port > 0) return std::make_pair(port, metrics);
    int status;
    if (waitpid(child.pid, &status, WNOHANG) == child.pid) {
      return absl::InternalError(absl::StrCat(child.name, " exited during start (status ", status,
                                              ")", LogPath(child.name).empty() ? "" : "; see ",
                                              LogPath(child.name)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError(absl::StrCat(child.name, " did not start within ",
                                                  absl::FormatDuration(options_.start_timeout)));
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(LocalClusterOptions options) {
  std::unique_ptr<LocalCluster> c(new LocalCluster());
  if (options.bin_dir.empty()) options.bin_dir = ExecutableDir();
  if (options.run_dir.empty()) {
    char tmpl[] = "/tmp/tandem-cluster-XXXXXX";
    if (!mkdtemp(tmpl)) return absl::InternalError("cannot create a run directory");
    options.run_dir = tmpl;
  }
  c->options_ = options;
  TANDEM_RETURN_IF_ERROR(ValidateLocalClusterOptions(options));
  if (options.mps) {
    TANDEM_ASSIGN_OR_RETURN(c->mps_, MpsDaemon::Start(options.run_dir));
  }
  auto worker_env = [&](int sm_percent) {
    return c->mps_ ? MpsWorkerEnv(*c->mps_, sm_percent) : std::vector<std::pair<std::string, std::string>>{};
  };
  const std::string model_arg = absl::StrCat("--model=", options.model_dir);

  const std::string router_port = (fs::path(options.run_dir) / "router.port").string();
  std::vector<std::string> router_args = {absl::StrCat("--listen=", options.router_listen), model_arg,
                                          absl::StrCat("--port_file=", router_port),
                                          "--metrics_listen=127.0.0.1:0",
                                          absl::StrCat("--http_listen=", options.router_http_listen)};
  const std::vector<std::string> router_security = SecurityFlagArgs(options.security, /*api_token=*/true);
  const std::vector<std::string> worker_security = SecurityFlagArgs(options.security, /*api_token=*/false);
  router_args.insert(router_args.end(), router_security.begin(), router_security.end());
  router_args.insert(router_args.end(), options.router_args.begin(), options.router_args.end());
  TANDEM_ASSIGN_OR_RETURN(c->router_, c->Spawn("router", "tandem-router", router_args));
  TANDEM_ASSIGN_OR_RETURN(auto ports, c->WaitForPortFile(router_port, c->router_));
  c->router_address_ = absl::StrCat("127.0.0.1:", ports.first);
  c->router_http_address_ = RouterHttpAddress(router_port);
  c->metrics_addresses_.push_back(absl::StrCat("127.0.0.1:", ports.second));
  c->router_args_ = router_args;

  std::vector<std::string> metrics_by_role;
  auto start_workers = [&](const std::string& role, const std::string& binary, int n,
                           const std::vector<std::string>& common,
                           const std::vector<std::vector<std::string>>& per,
                           std::vector<Child>* children, std::vector<std::string>* addresses,
                           int sm_percent) -> absl::Status {
    for (int i = 0; i < n; ++i) {
      const std::string name = absl::StrCat(role, i);
      const std::string port_file = (fs::path(options.run_dir) / (name + ".port")).string();
      std::vector<std::string> args = {absl::StrCat("--router=", c->router_address_),
                                       "--listen=127.0.0.1:0", model_arg,
                                       absl::StrCat("--port_file=", port_file), "--metrics_listen=127.0.0.1:0"};
      args.insert(args.end(), worker_security.begin(), worker_security.end());
      args.insert(args.end(), common.begin(), common.end());
      if (i < static_cast<int>(per.size())) args.insert(args.end(), per[i].begin(), per[i].end());
      TANDEM_ASSIGN_OR_RETURN(Child child, c->Spawn(name, binary, args, worker_env(sm_percent)));
      children->push_back(child);
    }
    for (int i = 0; i < n; ++i) {
      const std::string port_file = (fs::path(options.run_dir) / absl::StrCat(role, i, ".port")).string();
      TANDEM_ASSIGN_OR_RETURN(auto p, c->WaitForPortFile(port_file, (*children)[i]));
      addresses->push_back(absl::StrCat("127.0.0.1:", p.first));
      metrics_by_role.push_back(absl::StrCat("127.0.0.1:", p.second));
    }
    return absl::OkStatus();
  };
  TANDEM_RETURN_IF_ERROR(start_workers("decode", "tandem-decode-worker", options.num_decode,
                                       options.decode_args, options.per_decode_args, &c->decode_,
                                       &c->decode_addresses_, options.decode_sm_percent));
  std::vector<std::string> decode_metrics;
  decode_metrics.swap(metrics_by_role);
  TANDEM_RETURN_IF_ERROR(start_workers("prefill", "tandem-prefill-worker", options.num_prefill,
                                       options.prefill_args, options.per_prefill_args, &c->prefills_,
                                       &c->prefill_addresses_, options.prefill_sm_percent));
  c->metrics_addresses_.insert(c->metrics_addresses_.end(), metrics_by_role.begin(), metrics_by_role.end());
  c->metrics_addresses_.insert(c->metrics_addresses_.end(), decode_metrics.begin(), decode_metrics.end());
  metrics_by_role.clear();
  std::vector<std::string> aggregated_args = {"--role=aggregated"};
  aggregated_args.insert(aggregated_args.end(), options.aggregated_args.begin(), options.aggregated_args.end());
  TANDEM_RETURN_IF_ERROR(start_workers("aggregated", "tandem-decode-worker", options.num_aggregated, aggregated_args,
                                       {}, &c->aggregated_, &c->aggregated_addresses_, 0));
  c->metrics_addresses_.insert(c->metrics_addresses_.end(), metrics_by_role.begin(), metrics_by_role.end());
  if (!options.wait_for_workers) return c;

  TANDEM_ASSIGN_OR_RETURN(PublicClientOptions client, ClusterPublicClientOptions(options.security));
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel, DialPublic(c->router_address_, client));
  auto stub = v1::GenerationService::NewStub(channel);
  const absl::Time give_up = absl::Now() + options.start_timeout;
  v1::ModelInfo info;
  while (absl::Now() < give_up) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    if (stub->GetModelInfo(&ctx, v1::GetModelInfoRequest(), &info).ok() &&
        info.prefill_workers() == options.num_prefill && info.decode_workers() == options.num_decode &&
        info.aggregated_workers() == options.num_aggregated) {
      return c;
    }
    std::string dead;
    if (!c->AllAlive(&dead)) {
      return absl::InternalError(absl::StrCat(dead, " exited during start; see ", c->LogPath(dead)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "workers did not all register with the router: ", info.prefill_workers(), "/",
      options.num_prefill, " prefill, ", info.decode_workers(), "/", options.num_decode, " decode, ",
      info.aggregated_workers(), "/", options.num_aggregated, " aggregated"));
}

bool LocalCluster::AllAlive(std::string* who) {
  // Reaps a child that exited, so its status is kept for Stop().
  auto check = [&](Child& ch) {
    if (ch.pid <= 0) return true;
    int status;
    if (ch.exit_status < 0 && waitpid(ch.pid, &status, WNOHANG) == ch.pid) ch.exit_status = status;
    if (ch.exit_status < 0) return true;
    if (who) *who = ch.name;
    return false;
  };
  if (!check(router_)) return false;
  for (Child& ch : prefills_) if (!check(ch)) return false;
  for (Child& ch : decode_) if (!check(ch)) return false;
  for (Child& ch : aggregated_) if (!check(ch)) return false;
  return true;
}

absl::StatusOr<int> LocalCluster::Terminate(const std::string& name, absl::Duration timeout) {
  Child* ch = nullptr;
  for (Child* c : {&router_}) if (c->name == name) ch = c;
  for (Child& c : prefills_) if (c.name == name) ch = &c;
  for (Child& c : decode_) if (c.name == name) ch = &c;
  for (Child& c : aggregated_) if (c.name == name) ch = &c;
  if (ch == nullptr) return absl::NotFoundError(absl::StrCat("no process named ", name));
  if (ch->exit_status < 0) kill(ch->pid, SIGTERM);
  const absl::Time give_up = absl::Now() + timeout;
  while (ch->exit_status < 0) {
    int status;
    if (waitpid(ch->pid, &status, WNOHANG) == ch->pid) {
      ch->exit_status = status;
      break;
    }
    if (absl::Now() > give_up) {
      return absl::DeadlineExceededError(absl::StrCat(name, " did not exit within ", absl::FormatDuration(timeout)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(ch->exit_status) ? WEXITSTATUS(ch->exit_status) : -1;
}

absl::Status LocalCluster::RestartRouter(const std::vector<std::string>& extra_args) {
  TANDEM_RETURN_IF_ERROR(Terminate("router").status());
  const std::string port_file = (fs::path(options_.run_dir) / "router.port").string();
  std::filesystem::remove(port_file);
  std::vector<std::string> args = router_args_;
  // The old port, so that the workers' --router still names it.
  args.push_back(absl::StrCat("--listen=", router_address_));
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  TANDEM_ASSIGN_OR_RETURN(router_, Spawn("router", "tandem-router", args));
  TANDEM_ASSIGN_OR_RETURN(auto ports, WaitForPortFile(port_file, router_));
  metrics_addresses_[0] = absl::StrCat("127.0.0.1:", ports.second);
  router_http_address_ = RouterHttpAddress(port_file);
  return absl::OkStatus();
}

absl::Status ValidateLocalClusterOptions(const LocalClusterOptions& o) {
  if (o.num_prefill < 0 || o.num_decode < 0 || o.num_aggregated < 0 || o.num_decode + o.num_aggregated < 1) {
    return absl::InvalidArgumentError(
        "--prefill, --decode and --aggregated must be >= 0, with at least one decode or aggregated worker");
  }
  for (int p : {o.prefill_sm_percent, o.decode_sm_percent}) {
    if (p < 0 || p > 100) {
      return absl::InvalidArgumentError("--prefill_sm_percent and --decode_sm_percent must be in [0, 100]");
    }
    if (p > 0 && !o.mps) {
      return absl::InvalidArgumentError("--prefill_sm_percent and --decode_sm_percent need --mps");
    }
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::Stop(absl::Duration grace) {
  if (stopped_) return absl::OkStatus();
  stopped_ = true;
  std::vector<Child*> order;
  for (Child& ch : prefills_) order.push_back(&ch);
  for (Child& ch : decode_) order.push_back(&ch);
  for (Child& ch : aggregated_) order.push_back(&ch);
  order.push_back(&router_);
  for (Child* ch : order) {
    if (ch->pid > 0 && ch->exit_status < 0) kill(ch->pid, SIGTERM);
  }
  std::vector<std::string> bad;
  const absl::Time give_up = absl::Now() + grace;
  for (Child* ch : order) {
    if (ch->pid <= 0) continue;
    while (ch->exit_status < 0) {
      int status;
      pid_t r = waitpid(ch->pid, &status, WNOHANG);
      if (r == ch->pid) {
        ch->exit_status = status;
        break;
      }
      if (r < 0) break;  // reaped elsewhere
      if (absl::Now() > give_up) {
        kill(ch->pid, SIGKILL);
        waitpid(ch->pid, &status, 0);
        ch->exit_status = status;
        bad.push_back(absl::StrCat(ch->name, " did not stop within ", absl::FormatDuration(grace)));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (ch->exit_status >= 0 &&
        !(WIFEXITED(ch->exit_status) && WEXITSTATUS(ch->exit_status) == 0) &&
        !(WIFSIGNALED(ch->exit_status) && WTERMSIG(ch->exit_status) == SIGKILL)) {
      bad.push_back(absl::StrCat(ch->name, " exited with status ", ch->exit_status));
    }
  }
  if (!bad.empty()) return absl::InternalError(absl::StrJoin(bad, "; "));
  return absl::OkStatus();
}

LocalCluster::~LocalCluster() { Stop(absl::Seconds(10)).IgnoreError(); }

}  // namespace tandem
