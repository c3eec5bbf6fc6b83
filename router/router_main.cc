// tandem-router: the public gRPC API in front of prefill and decode workers.
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/default_model/default_model.h"
#include "common/metrics/serving_metrics.h"
#include "common/rpc/api_token_flags.h"
#include "common/rpc/grpc_server.h"
#include "common/util/flags_usage.h"
#include "common/util/logging.h"
#include "common/util/port_file.h"
#include "common/util/signals.h"
#include "common/util/status_macros.h"
#include "router/generation_service.h"
#include "router/http/chat_renderer.h"
#include "router/http/openai_server.h"
#include "router/registry_service.h"
#include "router/router_config.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:8000", "gRPC listen address host:port (port 0: any free port)");
ABSL_FLAG(std::string, model, "", "Hugging Face model directory (config.json, tokenizer.json); empty: built-in default");
ABSL_FLAG(std::string, served_model_name, "", "model name clients see; empty: the directory's name");
ABSL_FLAG(int32_t, max_inflight_requests, 0,
          "requests placed on workers at once, the rest queue (0: twice the live workers' max batch sizes)");
ABSL_FLAG(int32_t, max_queued_requests, 4096, "requests waiting in the router's queue beyond this are refused");
ABSL_FLAG(int32_t, local_prefill_max_tokens, 0,
          "prompts shorter than this are prefilled by their decode worker, not sent through a prefill worker (0: never)");
ABSL_FLAG(double, liveness_timeout_seconds, 5.0, "a worker silent this long is taken out of placement");
ABSL_FLAG(double, report_interval_seconds, 0.5, "how often workers report load");
ABSL_FLAG(double, worker_timeout_seconds, 600.0,
          "most time any worker call may take (the client's remaining deadline, capped by this)");
ABSL_FLAG(double, kv_reservation_ttl_seconds, 120.0,
          "lease on a decode worker's KV reservation: freed if not claimed by Decode within this");
ABSL_FLAG(std::string, http_listen, "0.0.0.0:8080",
          "OpenAI-compatible HTTP API address host:port (port 0: any free port)");
ABSL_FLAG(int32_t, http_threads, 512, "HTTP connections served at once (each holds a thread while its request runs)");
ABSL_FLAG(std::string, port_file, "", "write the bound gRPC, metrics and HTTP ports (one per line) once serving");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:0", "Prometheus /metrics address (port 0: any free port)");
ABSL_FLAG(double, slo_ttft_seconds, 1.0, "default time-to-first-token objective (requests may set their own)");
ABSL_FLAG(double, slo_tpot_seconds, 0.1, "default time-per-output-token objective");
ABSL_FLAG(std::string, placement, "cache_aware",
          "how workers are chosen: cache_aware (cached prefix against load), load (most free KV), round_robin");
ABSL_FLAG(double, placement_prefix_weight, 1.0, "cache_aware: cost per prompt block the worker does not cache");
ABSL_FLAG(double, placement_load_weight, 1.0, "cache_aware: cost per KV block the worker has in use");
ABSL_FLAG(int32_t, prefix_index_stale_reports, 4,
          "a worker whose block events are older than this many report intervals is placed by load only");

namespace tandem::router {
namespace {

RouterConfig ConfigFromFlags() {
  RouterConfig c;
  c.listen = absl::GetFlag(FLAGS_listen);
  c.model_dir = absl::GetFlag(FLAGS_model);
  c.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  c.max_inflight_requests = absl::GetFlag(FLAGS_max_inflight_requests);
  c.max_queued_requests = absl::GetFlag(FLAGS_max_queued_requests);
  c.local_prefill_max_tokens = absl::GetFlag(FLAGS_local_prefill_max_tokens);
  c.liveness_timeout_seconds = absl::GetFlag(FLAGS_liveness_timeout_seconds);
  c.report_interval_seconds = absl::GetFlag(FLAGS_report_interval_seconds);
  c.worker_timeout_seconds = absl::GetFlag(FLAGS_worker_timeout_seconds);
  c.kv_reservation_ttl_seconds = absl::GetFlag(FLAGS_kv_reservation_ttl_seconds);
  c.http_listen = absl::GetFlag(FLAGS_http_listen);
  c.http_threads = absl::GetFlag(FLAGS_http_threads);
  c.port_file = absl::GetFlag(FLAGS_port_file);
  c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  c.slo_ttft_seconds = absl::GetFlag(FLAGS_slo_ttft_seconds);
  c.slo_tpot_seconds = absl::GetFlag(FLAGS_slo_tpot_seconds);
  c.placement_prefix_weight = absl::GetFlag(FLAGS_placement_prefix_weight);
  c.placement_load_weight = absl::GetFlag(FLAGS_placement_load_weight);
  c.prefix_index_stale_reports = absl::GetFlag(FLAGS_prefix_index_stale_reports);
  return c;
}

absl::Status Run(const RouterConfig& c) {
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<const ClusterSecurity> security, RouterSecurityFromFlags());
  RouterContext ctx;
  ctx.config = c;
  std::string dir = c.model_dir;
  if (dir.empty()) {
    TANDEM_ASSIGN_OR_RETURN(dir, EnsureDefaultModel());
  }
  TANDEM_ASSIGN_OR_RETURN(ctx.model, LoadModelConfig(dir + "/config.json"));
  TANDEM_ASSIGN_OR_RETURN(ctx.tokenizer, Tokenizer::FromDir(dir));
  // Workers name the model the way the loader does: the directory's name,
  // or "tandem-default" for the built-in model.
  ctx.model_name = c.model_dir.empty()
                       ? "tandem-default"
                       : std::filesystem::path(c.model_dir).lexically_normal().filename().string();
  if (ctx.model_name.empty()) ctx.model_name = std::filesystem::path(c.model_dir).parent_path().filename();
  // generation_config.json: more EOS ids (Llama 3 Instruct's <|eot_id|>)
  // and the sampling defaults requests get.
  TANDEM_ASSIGN_OR_RETURN(ctx.generation_defaults, LoadGenerationConfig(dir));
  ctx.eos_ids = MergeEosIds(ctx.model.eos_token_ids, ctx.generation_defaults);
  if (ctx.eos_ids.empty()) ctx.eos_ids = ctx.tokenizer->eos_ids();

  const std::string served = c.served_model_name.empty() ? ctx.model_name : c.served_model_name;
  ctx.served_model_name = served;
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> metrics_server,
                          MetricsServer::Start(c.metrics_listen, {{"model", served}, {"role", "router"}}));
  RouterMetrics metrics(*metrics_server);
  metrics.ttft_target->Set(c.slo_ttft_seconds);
  metrics.tpot_target->Set(c.slo_tpot_seconds);
  ctx.metrics = &metrics;

  PlacementMetrics placement_metrics(*metrics_server);
  ctx.placement_metrics = &placement_metrics;
  // A placed prompt counts as cached on its worker until the worker's
  // events say so, for long enough to cover a prefill queued behind others.
  PrefixIndex prefix_index(absl::Seconds(c.report_interval_seconds * c.prefix_index_stale_reports),
                           std::max(absl::Seconds(10), absl::Seconds(c.report_interval_seconds * 20)));
  ctx.prefix_index = &prefix_index;
  WorkerRegistryOptions ro;
  ro.model_name = ctx.model_name;
  ro.liveness_timeout = absl::Seconds(c.liveness_timeout_seconds);
  ro.report_interval = absl::Seconds(c.report_interval_seconds);
  ro.on_removed = [&prefix_index](const std::string& id) { prefix_index.RemoveWorker(id); };
  WorkerRegistry registry(ro);
  ctx.registry = &registry;
  PlacementPolicy placement(PlacementOptionsFrom(c), registry, &prefix_index);
  ctx.placement = &placement;
  GenerationServiceImpl generation(ctx);
  RegistryService registry_service(registry, &prefix_index);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GrpcServer> server,
                          GrpcServer::Start(c.listen, {&generation, &registry_service}, GrpcServerLimits::FromFlags(),
                                            security->ServerCredentials(ClientCertificates::kVerifyIfPresented)));
  http::OpenAiServerOptions ho;
  ho.listen = c.http_listen;
  ho.threads = c.http_threads;
  ho.api_token = security->api_token();
  const SecurityOptions tls_files = SecurityOptionsWithApiTokenFromFlags();
  ho.tls_cert_file = tls_files.tls_cert_file;
  ho.tls_key_file = tls_files.tls_key_file;
  ho.served_model_name = served;
  http::ChatRenderer chat = http::ChatRendererFromModelDir(dir);
  if (!chat.render) {
    TANDEM_LOG(WARNING) << "chat completions off: " << chat.unavailable_reason;
  }
  ho.render_chat = std::move(chat.render);
  ho.no_chat_reason = chat.unavailable_reason;
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<http::OpenAiServer> http_server,
                          http::OpenAiServer::Start(ho, ctx, generation));
  if (!c.port_file.empty()) WritePortFile(c.port_file, server->port(), metrics_server->port(), http_server->port());
  TANDEM_LOG(INFO) << "router serving " << served << " on " << server->address() << ", metrics on port "
                   << metrics_server->port() << ", OpenAI HTTP API on port " << http_server->port();

  std::atomic<bool> stop{false};
  std::thread expiry([&] {
    while (!stop) {
      registry.ExpireStale(absl::Now());
      placement_metrics.index_blocks->Set(static_cast<double>(prefix_index.NumKeys()));
      absl::SleepFor(absl::Milliseconds(250));
    }
  });
  const int sig = WaitForTerminationSignal();
  TANDEM_LOG(INFO) << "signal " << sig << ": stopping the router";
  server->SetServing(false);
  http_server->Stop();
  server->Shutdown(absl::Seconds(5));
  stop = true;
  expiry.join();
  return absl::OkStatus();
}

}  // namespace
}  // namespace tandem::router

int main(int argc, char** argv) {
  tandem::BlockTerminationSignals();
  tandem::SetUpFlagsUsage("tandem router: [--listen host:port] [--model DIR]", {"router/"});
  absl::ParseCommandLine(argc, argv);
  tandem::SetLogRole("router");
  tandem::router::RouterConfig config = tandem::router::ConfigFromFlags();
  absl::Status s = tandem::router::ValidateRouterConfig(config);
  // The one flag that parses into a type of its own.
  if (s.ok()) {
    absl::StatusOr<tandem::router::PlacementMode> mode =
        tandem::router::ParsePlacementMode(absl::GetFlag(FLAGS_placement));
    if (mode.ok()) config.placement = *mode;
    s = mode.status();
  }
  if (s.ok()) s = tandem::router::Run(config);
  if (!s.ok()) {
    TANDEM_LOG(ERROR) << s;
    return 1;
  }
  return 0;
}
