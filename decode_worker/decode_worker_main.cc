// tandem-decode-worker: owns a KV pool, receives prompts' KV from prefill
// workers and runs the continuous decode batch.
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "common/engine/engine.h"
#include "common/engine/local_generator.h"
#include "common/engine/scheduler_flags.h"
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
#include "common/worker/fault_injector.h"
#include "common/worker/kv_cache_event_source.h"
#include "common/worker/worker_status.h"
#include "decode_worker/decode_loop.h"
#include "decode_worker/decode_service.h"
#include "decode_worker/decode_worker_config.h"

ABSL_FLAG(std::string, role, "decode",
          "decode: decode prompts whose KV prefill workers send; aggregated: prefill and decode every request here");
ABSL_FLAG(double, kv_write_hold_max_seconds, 60.0,
          "the longest a prefill worker may hold a reservation's blocks for its one-sided KV writes (UCX puts, "
          "CUDA IPC copies); past it the hold ends, so a hung prefill worker cannot keep a released "
          "reservation's blocks");

namespace tandem {
namespace {

DecodeWorkerConfig ConfigFromFlags() {
  DecodeWorkerConfig c;
  c.worker = WorkerOptionsFromFlags();
  c.scheduler = SchedulerOptionsFromFlags(c.worker.device == "cuda");
  c.role = absl::GetFlag(FLAGS_role);
  c.kv_write_hold_max_seconds = absl::GetFlag(FLAGS_kv_write_hold_max_seconds);
  return c;
}

absl::Status Run(const DecodeWorkerConfig& c) {
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<const ClusterSecurity> security, ClusterSecurityFromFlags());
  TANDEM_ASSIGN_OR_RETURN(LoadedModel model, LoadModel(c.worker.model));
  const std::string fingerprint = ModelFingerprint(model);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<ModelBackend> backend, CreateBackend(model, c.worker.backend));
  Engine engine(std::move(backend));
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<MetricsServer> metrics_server,
                          MetricsServer::Start(c.worker.metrics_listen, {{"model", model.name}, {"role", c.role}}));
  DecodeMetrics metrics(*metrics_server);
  KvReservations reservations(engine.kv_cache().allocator());
  DecodeLoop loop(engine, reservations, c.scheduler,
                  ModelEosIds(model.config, *model.tokenizer), &metrics);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<KvTransport> transport, CreateKvTransport(c.worker.transport));
  // Declared after `reservations`, so destroyed (its threads joined) first.
  // The reservations gate every write the transport's own threads make.
  if (KvReceiver* receiver = transport->receiver()) receiver->SetWriteGate(&reservations);

  // The port is known only once the server is up, and the worker's id is
  // its address, so the pool is exported before serving and its descriptor
  // completed after.
  DecodeServiceImpl service(model.config, engine.kv_cache().layout(), reservations, loop);
  FaultInjector rpc_faults(c.worker.fault_rpc_failure_rate);
  service.SetFaultInjector(&rpc_faults);
  service.write_holds().set_max_hold(absl::Seconds(c.kv_write_hold_max_seconds));
  service.write_holds().SetMetrics(*metrics_server);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GrpcServer> server, GrpcServer::Start(c.worker.listen, {&service}, GrpcServerLimits::FromFlags(),
                                            security->ServerCredentials(ClientCertificates::kRequire)));
  const std::string address = absl::StrCat(c.worker.advertise_host, ":", server->port());
  TANDEM_ASSIGN_OR_RETURN(v1::KvPoolDescriptor pool,
                          transport->ExportPool(engine.backend().kv_pool(), {address, fingerprint, engine.backend().numerics()}));
  service.SetTransport(transport.get());
  // Reservations start from the prompt's cached prefix here (issue 20).
  if (c.scheduler.enable_prefix_caching) service.SetPrefixCache(&engine.kv_cache());
  service.SetPool(pool);
  loop.Start();
  if (!c.worker.port_file.empty()) WritePortFile(c.worker.port_file, server->port(), metrics_server->port());
  TANDEM_LOG(INFO) << c.role << " worker serving on " << address << " (" << transport->name()
                   << " transport, pool exported as " << pool.transport() << ", "
                   << engine.kv_cache().num_total_blocks() << " KV blocks), metrics on port " << metrics_server->port();

  const v1::WorkerRole role = c.role == "aggregated" ? v1::WORKER_ROLE_AGGREGATED : v1::WORKER_ROLE_DECODE;
  v1::WorkerInfo info = DescribeWorker(address, role, model.name, fingerprint,
                                       engine.backend().numerics(), engine.kv_cache(),
                                       transport->name());
  info.set_max_batch_size(c.scheduler.max_batch_size);
  info.set_max_batch_tokens(static_cast<int32_t>(c.scheduler.max_batch_tokens));
  std::atomic<bool> draining{false};
  auto load = [&] {
    const DecodeLoopStats s = loop.stats();
    metrics.kv_reservations->Set(static_cast<double>(reservations.size()));
    return MakeLoadReport(engine.kv_cache(), s.running, s.waiting, draining.load(), metrics);
  };
  service.SetLoadReporter(load);
  info.set_publishes_block_events(true);
  WorkerRegistration registration(c.worker.router, info, load);
  // Its prefix cache's block events go to the router's prefix index.
  registration.SetBlockEventSource(KvCacheEventSource(engine.kv_cache()));
  // A router this worker no longer reports to will claim none of the
  // reservations it made: free them now, not at their lease's end (blocks
  // a transfer still writes stay held until its last write ended).
  registration.SetRouterLostCallback([&reservations](const std::string& router_instance) {
    const int freed = reservations.ReleaseOwnedBy(router_instance);
    if (freed > 0) {
      TANDEM_LOG(WARNING) << "freed " << freed << " unclaimed KV reservations of lost router instance "
                          << router_instance;
    }
  });
  registration.Start();

  const int sig = WaitForTerminationSignal();
  TANDEM_LOG(INFO) << "signal " << sig << ": draining (taking no new requests)";
  draining = true;
  service.SetDraining();
  server->SetServing(false);
  registration.ReportNow();
  WaitUntilIdle(absl::Seconds(c.worker.drain_timeout_seconds), absl::Milliseconds(50), [&] {
    const DecodeLoopStats s = loop.stats();
    return service.open_decode_calls() == 0 && reservations.size() == 0 && s.running == 0 && s.waiting == 0;
  });
  server->Shutdown(absl::Seconds(1));
  loop.Stop();
  registration.Stop();
  TANDEM_LOG(INFO) << "decode worker stopped; " << engine.kv_cache().num_used_blocks()
                   << " KV blocks in use at exit";
  return absl::OkStatus();
}

}  // namespace
}  // namespace tandem

int main(int argc, char** argv) {
  tandem::BlockTerminationSignals();
  tandem::SetUpFlagsUsage("tandem decode worker: --router host:port [--model DIR]", {"decode_worker/"});
  absl::ParseCommandLine(argc, argv);
  tandem::SetLogRole(absl::GetFlag(FLAGS_role));
  const tandem::DecodeWorkerConfig config = tandem::ConfigFromFlags();
  absl::Status s = tandem::ValidateDecodeWorkerConfig(config);
  if (s.ok()) s = tandem::Run(config);
  if (!s.ok()) {
    TANDEM_LOG(ERROR) << s;
    return 1;
  }
  return 0;
}
