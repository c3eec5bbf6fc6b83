// A router, N prefill, M decode and K aggregated workers as real processes on
// loopback: what `tandem up` runs and what the integration tests start.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/rpc/tls_credentials.h"
#include "tools/cli/mps_daemon.h"

namespace tandem {

struct LocalClusterOptions {
  int num_prefill = 1;
  int num_decode = 1;
  // Workers that prefill and decode themselves (tandem-decode-worker
  // --role=aggregated), beside or instead of the pairs.
  int num_aggregated = 0;
  // Prefill and decode sharing the GPU spatially: start a CUDA MPS control
  // daemon for the cluster (stopped with it) and give the prefill and
  // decode workers these shares of the SMs (percent; 0: unlimited).
  bool mps = false;
  int prefill_sm_percent = 0;
  int decode_sm_percent = 0;
  std::string model_dir;  // empty: the built-in default model
  // Where tandem-router, tandem-prefill-worker and tandem-decode-worker
  // are; empty: next to the running executable.
  std::string bin_dir;
  std::string router_listen = "127.0.0.1:0";
  // The router's OpenAI-compatible HTTP API (--http_listen).
  std::string router_http_listen = "127.0.0.1:0";
  // Each process's stderr goes to <log_dir>/<name>.log; empty: inherited.
  std::string log_dir;
  // Scratch space for port files; empty: a fresh directory under /tmp.
  std::string run_dir;
  std::vector<std::string> router_args, prefill_args, decode_args, aggregated_args;
  // Per-worker extra args (index i applies to worker i), e.g. a different
  // block size for one worker in a layout-mismatch test.
  std::vector<std::vector<std::string>> per_prefill_args, per_decode_args;
  absl::Duration start_timeout = absl::Seconds(60);
  // Wait until every worker has registered with the router.
  bool wait_for_workers = true;
  // TLS, cluster token and api token files, passed to every process (the
  // api token to the router only); the launcher's own calls to the router
  // use them too. Default: plaintext.
  SecurityOptions security;
};

// Owns the child processes: each is started with PR_SET_PDEATHSIG so none
// outlives the owner, and the destructor stops them all.
class LocalCluster {
 public:
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(LocalClusterOptions options);
  ~LocalCluster();

  const std::string& router_address() const { return router_address_; }
  // The router's HTTP API, "127.0.0.1:port" (the third line of its port file).
  const std::string& router_http_address() const { return router_http_address_; }
  // Each worker's gRPC address ("127.0.0.1:port"), in start order.
  const std::vector<std::string>& prefill_addresses() const { return prefill_addresses_; }
  const std::vector<std::string>& decode_addresses() const { return decode_addresses_; }
  const std::vector<std::string>& aggregated_addresses() const { return aggregated_addresses_; }
  // host:port of every process's /metrics, router first, then prefill,
  // decode and aggregated workers in start order.
  const std::vector<std::string>& metrics_addresses() const { return metrics_addresses_; }
  pid_t router_pid() const { return router_.pid; }
  pid_t prefill_pid(int i) const { return prefills_[i].pid; }
  pid_t decode_pid(int i) const { return decode_[i].pid; }
  pid_t aggregated_pid(int i) const { return aggregated_[i].pid; }
  std::string LogPath(const std::string& name) const;

  // Sends SIGTERM to every process (workers first), waits up to `grace`,
  // then SIGKILLs what is left. Returns an error naming every process that
  // did not exit with status 0.
  absl::Status Stop(absl::Duration grace = absl::Seconds(20));
  // Sends SIGTERM to one process ("router", "prefill0", "decode1", ...)
  // and waits for it to exit; returns its exit code (-1 if killed by a
  // signal).
  absl::StatusOr<int> Terminate(const std::string& name, absl::Duration timeout = absl::Seconds(30));

  // Stops the router (SIGTERM) and starts a new one on the same port, with
  // its flags and `extra_args` after them (a later flag wins); the workers
  // find it at the old address and register again. Returns once it serves
  // (its port file), not once the workers are back.
  absl::Status RestartRouter(const std::vector<std::string>& extra_args = {});

  // True while every process is alive; else sets `who` to a dead one's name.
  bool AllAlive(std::string* who);

 private:
  struct Child {
    std::string name;
    pid_t pid = -1;
    int exit_status = -1;  // waitpid status once reaped
  };
  LocalCluster() = default;
  absl::StatusOr<Child> Spawn(const std::string& name, const std::string& binary,
                              const std::vector<std::string>& args,
                              const std::vector<std::pair<std::string, std::string>>& env = {});
  // The (gRPC, metrics) ports a child wrote once listening.
  absl::StatusOr<std::pair<int, int>> WaitForPortFile(const std::string& path, const Child& child);

  LocalClusterOptions options_;
  std::vector<std::string> router_args_;  // as started, for RestartRouter
  std::string router_address_;
  std::string router_http_address_;
  std::vector<std::string> prefill_addresses_, decode_addresses_, aggregated_addresses_, metrics_addresses_;
  Child router_;
  std::vector<Child> prefills_, decode_, aggregated_;
  bool stopped_ = false;
  std::unique_ptr<MpsDaemon> mps_;  // quits after the processes stopped
};

// INVALID_ARGUMENT for counts or SM shares out of range.
absl::Status ValidateLocalClusterOptions(const LocalClusterOptions& o);

// The directory of the running executable.
std::string ExecutableDir();

}  // namespace tandem
