#include "tools/cli/up_command.h"

#include <iostream>

#include "absl/flags/flag.h"
#include "common/rpc/api_token_flags.h"
#include "common/util/logging.h"
#include "common/util/signals.h"
#include "tools/cli/local_cluster.h"
#include "tools/cli/request_flags.h"

ABSL_FLAG(int32_t, prefill, 1, "prefill workers to start");
ABSL_FLAG(int32_t, decode, 1, "decode workers to start");
ABSL_FLAG(int32_t, aggregated, 0, "aggregated workers (prefill and decode in one process) to start");
ABSL_FLAG(bool, mps, false,
          "start a CUDA MPS control daemon for the cluster so prefill and decode workers on one GPU run concurrently");
ABSL_FLAG(int32_t, prefill_sm_percent, 0, "with --mps: the prefill workers' share of the SMs (0: unlimited)");
ABSL_FLAG(int32_t, decode_sm_percent, 0, "with --mps: the decode workers' share of the SMs (0: unlimited)");
ABSL_FLAG(std::vector<std::string>, worker_args, {},
          "flags for every worker, comma-separated (e.g. --device=cuda,--gpu_memory_fraction=0.42)");
ABSL_FLAG(std::string, listen, "127.0.0.1:8000", "router address for clients");
ABSL_FLAG(std::string, http_listen, "127.0.0.1:8080", "router's OpenAI-compatible HTTP API address");
ABSL_FLAG(std::string, log_dir, "", "write each process's log to DIR/<name>.log; empty: this terminal");
ABSL_FLAG(std::string, bin_dir, "", "where the tandem-* binaries are; empty: next to `tandem`");

namespace tandem::cli {

int RunUp() {
  SetLogRole("up");
  LocalClusterOptions o;
  o.num_prefill = absl::GetFlag(FLAGS_prefill);
  o.num_decode = absl::GetFlag(FLAGS_decode);
  o.num_aggregated = absl::GetFlag(FLAGS_aggregated);
  o.mps = absl::GetFlag(FLAGS_mps);
  o.prefill_sm_percent = absl::GetFlag(FLAGS_prefill_sm_percent);
  o.decode_sm_percent = absl::GetFlag(FLAGS_decode_sm_percent);
  for (auto* args : {&o.prefill_args, &o.decode_args, &o.aggregated_args}) *args = absl::GetFlag(FLAGS_worker_args);
  o.model_dir = absl::GetFlag(FLAGS_model);
  o.router_listen = absl::GetFlag(FLAGS_listen);
  o.router_http_listen = absl::GetFlag(FLAGS_http_listen);
  o.log_dir = absl::GetFlag(FLAGS_log_dir);
  o.bin_dir = absl::GetFlag(FLAGS_bin_dir);
  // --tls_*, --cluster_token_file and --api_token* go to the processes;
  // checked here first so a bad path fails before anything starts.
  o.security = SecurityOptionsWithApiTokenFromFlags();
  if (absl::Status s = ClusterSecurity::Load(o.security).status(); !s.ok()) {
    std::cerr << "tandem up: " << s << "\n";
    return 2;
  }
  if (absl::Status s = ValidateLocalClusterOptions(o); !s.ok()) {
    std::cerr << "tandem up: " << s.message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<LocalCluster>> cluster = LocalCluster::Start(o);
  if (!cluster.ok()) {
    std::cerr << "tandem up: " << cluster.status() << "\n";
    return 1;
  }
  std::cerr << "tandem is up: router at " << (*cluster)->router_address() << " with " << o.num_prefill
            << " prefill, " << o.num_decode << " decode and " << o.num_aggregated
            << " aggregated worker(s). Try\n  tandem client --router "
            << (*cluster)->router_address() << " \"Hello\"\nOpenAI-compatible API at http://"
            << (*cluster)->router_http_address() << "/v1, e.g.\n  curl http://" << (*cluster)->router_http_address()
            << "/v1/completions -H 'Content-Type: application/json' -d '{\"prompt\": \"Hello\", \"max_tokens\": 16}'\n"
            << "Ctrl-C stops everything.\n";
  WaitForTerminationSignal();
  std::cerr << "stopping...\n";
  absl::Status s = (*cluster)->Stop();
  if (!s.ok()) {
    std::cerr << "tandem up: " << s << "\n";
    return 1;
  }
  return 0;
}

}  // namespace tandem::cli
