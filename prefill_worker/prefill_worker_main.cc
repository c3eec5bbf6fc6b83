// tandem-prefill-worker: computes prompts' KV and first tokens, and ships
// the KV to the decode worker the router chose.
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/engine/engine.h"
#include "common/metrics/serving_metrics.h"
#include "common/rpc/grpc_server.h"
#include "common/rpc/tls_flags.h"
#include "common/rpc/worker_registration.h"
#include "common/transport/kv_transport.h"
#include "common/util/flags_usage.h"
#include "common/util/logging.h"
#include "common/util/port_file.h"
#include "common/util/signals.h"
#include "common/util/status_macros.h"
#include "common/worker/fault_injecting_transport.h"
#include "common/worker/fault_injector.h"
#include "common/worker/kv_cache_event_source.h"
#include "common/worker/worker_status.h"
#include "common/engine/scheduler_flags.h"
#include "prefill_worker/kv_write_hold.h"
#include "prefill_worker/prefill_loop.h"
#include "prefill_worker/prefill_service.h"
#include "prefill_worker/prefill_worker_config.h"

ABSL_FLAG(double, kv_transfer_finish_timeout_seconds, 3.0,
          "how long the end of a KV transfer waits for the decode worker to confirm the writes; past it the "
          "transfer fails UNAVAILABLE and its scratch blocks are freed (a dead decode worker is otherwise "
          "noticed only after 15-20 s)");

namespace tandem {
namespace {

PrefillWorkerConfig ConfigFromFlags() {
  PrefillWorkerConfig c;
  c.worker = WorkerOptionsFromFlags();
  c.scheduler = SchedulerOptionsFromFlags(c.worker.device == "cuda");
  c.kv_transfer_finish_timeout_seconds = absl::GetFlag(FLAGS_kv_transfer_finish_timeout_seconds);
  return c;
}

absl::Status Run(const PrefillWorkerConfig& c) {
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<const ClusterSecurity> security, ClusterSecurityFromFlags());
  TANDEM_ASSIGN_OR_RETURN(LoadedModel model, LoadModel(c.worker.model));
  const std::string fingerprint = ModelFingerprint(model);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<ModelBackend> backend, CreateBackend(model, c.worker.backend));
  Engine engine(std::move(backend));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<KvTransport> transport, CreateKvTransport(c.worker.transport));
  FaultInjector transfer_faults(c.worker.fault_transfer_failure_rate), rpc_faults(c.worker.fault_rpc_failure_rate);
  transport = MakeFaultInjectingTransport(std::move(transport), transfer_faults);

  // The worker's id is its address, known once the port is bound; the
  // loop starts (and so transfers begin) only after it is set.
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> metrics_server,
                          MetricsServer::Start(c.worker.metrics_listen, {{"model", model.name}, {"role", "prefill"}}));
  PrefillMetrics metrics(*metrics_server, std::string(transport->name()));
  TransferCounter transfer_counter(*metrics_server);
  // Outlives the loop: the loop's one-sided transfers hold their
  // destination's blocks through it (DecodeService.HoldKvWrite).
  KvWriteHolder write_holder;
  PrefillLoop loop_storage(engine, *transport, KvEndpointInfo{"", fingerprint, engine.backend().numerics()}, c.scheduler, &metrics,
                           &transfer_counter);
  PrefillLoop* loop = &loop_storage;
  PrefillServiceImpl service(model.config, engine.kv_cache().num_total_blocks(),
                             engine.kv_cache().layout().block_size, *loop);
  service.SetFaultInjector(&rpc_faults);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GrpcServer> server, GrpcServer::Start(c.worker.listen, {&service}, GrpcServerLimits::FromFlags(),
                                            security->ServerCredentials(ClientCertificates::kRequire)));
  const std::string address = absl::StrCat(c.worker.advertise_host, ":", server->port());
  loop->set_worker_id(address);
  loop->set_transfer_finish_timeout(absl::Seconds(c.kv_transfer_finish_timeout_seconds));
  loop->set_write_holder(&write_holder);
  loop->Start();
  if (!c.worker.port_file.empty()) WritePortFile(c.worker.port_file, server->port(), metrics_server->port());
  TANDEM_LOG(INFO) << "prefill worker serving on " << address << " (" << transport->name()
                   << " transport; each decode worker's pick is logged at its first transfer), metrics on port "
                   << metrics_server->port();

  v1::WorkerInfo info = DescribeWorker(address, v1::WORKER_ROLE_PREFILL, model.name, fingerprint,
                                       engine.backend().numerics(), engine.kv_cache(),
                                       transport->name());
  info.set_max_batch_tokens(static_cast<int32_t>(c.scheduler.max_batch_tokens));
  std::atomic<bool> draining{false};
  auto load = [&] {
    const PrefillLoopStats s = loop->stats();
    metrics.queued_prompt_tokens->Set(static_cast<double>(s.queued_tokens));
    v1::LoadReport r = MakeLoadReport(engine.kv_cache(), s.running, s.queued, draining.load(), metrics);
    r.set_queued_prompt_tokens(s.queued_tokens);
    return r;
  };
  service.SetLoadReporter(load);
  info.set_publishes_block_events(true);
  WorkerRegistration registration(c.worker.router, info, load);
  // Its prefix cache's block events go to the router's prefix index.
  registration.SetBlockEventSource(KvCacheEventSource(engine.kv_cache()));
  registration.Start();

  const int sig = WaitForTerminationSignal();
  TANDEM_LOG(INFO) << "signal " << sig << ": draining (taking no new prompts)";
  draining = true;
  service.SetDraining();
  server->SetServing(false);
  registration.ReportNow();
  WaitUntilIdle(absl::Seconds(c.worker.drain_timeout_seconds), absl::Milliseconds(20), [&] {
    const PrefillLoopStats s = loop->stats();
    return s.queued == 0 && s.running == 0;
  });
  server->Shutdown(absl::Seconds(1));
  loop->Stop();
  registration.Stop();
  return absl::OkStatus();
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  tandem::BlockTerminationSignals();
  tandem::SetUpFlagsUsage("tandem prefill worker: --router host:port [--model DIR]", {"prefill_worker/"});
  absl::ParseCommandLine(argc, argv);
  tandem::SetLogRole("prefill");
  const tandem::PrefillWorkerConfig config = tandem::ConfigFromFlags();
  absl::Status s = tandem::ValidatePrefillWorkerConfig(config);
  if (s.ok()) s = tandem::Run(config);
  if (!s.ok()) {
    TANDEM_LOG(ERROR) << s;
    return 1;
  }
  return 0;
}
