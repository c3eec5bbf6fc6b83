#include "common/worker/worker_options.h"

#include "absl/flags/flag.h"
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/transport/kv_transport.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:0", "gRPC listen address host:port (port 0: any free port)");
ABSL_FLAG(std::string, advertise_host, "127.0.0.1", "host name the router and peer workers dial");
ABSL_FLAG(std::string, router, "", "router address host:port");
ABSL_FLAG(std::string, model, "", "Hugging Face model directory; empty: the built-in default model");
ABSL_FLAG(bool, dummy_weights, false, "random weights of the config's shapes instead of safetensors");
ABSL_FLAG(uint64_t, dummy_seed, 0, "seed of --dummy_weights");
ABSL_FLAG(int32_t, num_kv_blocks, 2048,
          "KV cache blocks in the pool; with --device=cuda, 0 sizes the pool from --gpu_memory_fraction");
ABSL_FLAG(double, gpu_memory_fraction, 0.9,
          "CUDA: share of the GPU's memory this worker may use (weights, scratch, KV pool)");
ABSL_FLAG(int32_t, gpu, 0, "CUDA device ordinal");
ABSL_FLAG(std::string, gemm_algos, "",
          "CUDA: GEMM algorithm table written by tandem-gemm-tune for this GPU (empty: cuBLASLt's heuristic); "
          "prefill and decode workers should load the same one");
ABSL_FLAG(int32_t, block_size, 16, "tokens per KV block (prefill and decode workers must agree)");
ABSL_FLAG(int32_t, num_threads, 0, "CPU backend threads; 0: all cores");
ABSL_FLAG(std::string, cpu_bf16_activations, "auto",
          "CPU backend: round activations to bf16 as a bf16 model does: auto (when the weights are bf16), on or "
          "off; prefill and decode workers must agree");
ABSL_FLAG(std::string, device, "cpu", "engine backend: cpu or cuda");
ABSL_FLAG(std::string, transport, "auto",
          "KV transport: auto (GPU pools: cuda_ipc on one host, else staged UCX; host pools: UCX puts), cuda_ipc, "
          "ucx, ucx_staged or inproc");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC and metrics ports (one per line) once serving");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:0", "Prometheus /metrics address (port 0: any free port)");
ABSL_FLAG(double, drain_timeout_seconds, 30.0, "on SIGTERM, time to finish running work");
ABSL_FLAG(double, fault_transfer_failure_rate, 0.0,
          "testing: fail this fraction of KV transfers at random (UNAVAILABLE), in [0, 1]");
ABSL_FLAG(double, fault_rpc_failure_rate, 0.0,
          "testing: fail this fraction of request-path RPCs (ReserveKv, Prefill, Decode) at random, in [0, 1]");

namespace tandem {

WorkerOptions WorkerOptionsFromFlags() {
  WorkerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.advertise_host = absl::GetFlag(FLAGS_advertise_host);
  o.router = absl::GetFlag(FLAGS_router);
  o.model.model_dir = absl::GetFlag(FLAGS_model);
  o.model.dummy_weights = absl::GetFlag(FLAGS_dummy_weights);
  o.model.dummy_seed = absl::GetFlag(FLAGS_dummy_seed);
  o.backend.num_kv_blocks = absl::GetFlag(FLAGS_num_kv_blocks);
  o.backend.block_size = absl::GetFlag(FLAGS_block_size);
  o.backend.num_threads = absl::GetFlag(FLAGS_num_threads);
  o.cpu_bf16_activations = absl::GetFlag(FLAGS_cpu_bf16_activations);
  if (absl::StatusOr<std::optional<bool>> bf16 = ParseBf16ActivationsFlag(o.cpu_bf16_activations); bf16.ok()) {
    o.backend.cpu_bf16_activations = *bf16;
  }
  o.backend.gpu_memory_fraction = absl::GetFlag(FLAGS_gpu_memory_fraction);
  o.backend.gpu = absl::GetFlag(FLAGS_gpu);
  o.backend.cuda_gemm_algos = absl::GetFlag(FLAGS_gemm_algos);
  o.device = absl::GetFlag(FLAGS_device);
  o.backend.device = o.device == "cuda" ? BackendOptions::Device::kCuda : BackendOptions::Device::kCpu;
  o.transport = absl::GetFlag(FLAGS_transport);
  o.port_file = absl::GetFlag(FLAGS_port_file);
  o.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  o.drain_timeout_seconds = absl::GetFlag(FLAGS_drain_timeout_seconds);
  o.fault_transfer_failure_rate = absl::GetFlag(FLAGS_fault_transfer_failure_rate);
  o.fault_rpc_failure_rate = absl::GetFlag(FLAGS_fault_rpc_failure_rate);
  return o;
}

absl::Status ValidateWorkerOptions(const WorkerOptions& o) {
  if (o.router.empty()) return absl::InvalidArgumentError("--router is required (host:port)");
  if (o.listen.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--listen '", o.listen, "' is not host:port"));
  }
  if (o.device != "cpu" && o.device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--device '", o.device, "' is not cpu or cuda"));
  }
  if (o.backend.num_kv_blocks < 0 || (o.backend.num_kv_blocks == 0 && o.device != "cuda")) {
    return absl::InvalidArgumentError("--num_kv_blocks must be positive (0 only with --device=cuda)");
  }
  if (!(o.backend.gpu_memory_fraction > 0.0 && o.backend.gpu_memory_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu_memory_fraction ", o.backend.gpu_memory_fraction, " is not in (0, 1]"));
  }
  if (absl::Status s = ParseBf16ActivationsFlag(o.cpu_bf16_activations).status(); !s.ok()) return s;
  const std::vector<std::string> transports = KvTransportNames();
  if (std::find(transports.begin(), transports.end(), o.transport) == transports.end()) {
    return absl::InvalidArgumentError(absl::StrCat("--transport '", o.transport, "' is not one of ",
                                                   absl::StrJoin(transports, ", ")));
  }
  if (o.backend.gpu < 0) return absl::InvalidArgumentError("--gpu must be >= 0");
  if (o.backend.block_size <= 0) return absl::InvalidArgumentError("--block_size must be positive");
  if (o.drain_timeout_seconds < 0) return absl::InvalidArgumentError("--drain_timeout_seconds must be >= 0");
  if (!(o.fault_transfer_failure_rate >= 0.0 && o.fault_transfer_failure_rate <= 1.0)) {
    return absl::InvalidArgumentError("--fault_transfer_failure_rate must be in [0, 1]");
  }
  if (!(o.fault_rpc_failure_rate >= 0.0 && o.fault_rpc_failure_rate <= 1.0)) {
    return absl::InvalidArgumentError("--fault_rpc_failure_rate must be in [0, 1]");
  }
  return absl::OkStatus();
}

}  // namespace tandem
