#include "common/metrics/serving_metrics.h"

namespace tandem {
namespace {

prometheus::Gauge* Gauge(MetricsServer& s, const std::string& name, const std::string& help) {
  return &prometheus::BuildGauge().Name(name).Help(help).Labels(s.const_labels()).Register(s.registry()).Add({});
}

prometheus::Counter* Counter(MetricsServer& s, const std::string& name, const std::string& help,
                             const prometheus::Labels& labels = {}) {
  return &prometheus::BuildCounter().Name(name).Help(help).Labels(s.const_labels()).Register(s.registry()).Add(labels);
}

prometheus::Histogram* Histogram(MetricsServer& s, const std::string& name, const std::string& help,
                                 const std::vector<double>& buckets, const prometheus::Labels& labels = {}) {
  return &prometheus::BuildHistogram()
              .Name(name)
              .Help(help)
              .Labels(s.const_labels())
              .Register(s.registry())
              .Add(labels, buckets);
}

}  // namespace

WorkerMetrics::WorkerMetrics(MetricsServer& s)
    : requests_running(Gauge(s, "tandem_requests_running", "Requests being computed (in the batch).")),
      requests_waiting(Gauge(s, "tandem_requests_waiting", "Requests queued or preempted, waiting to run.")),
      kv_blocks_capacity(Gauge(s, "tandem_kv_blocks_capacity", "KV cache blocks in the pool.")),
      kv_blocks_used(Gauge(s, "tandem_kv_blocks_used", "KV cache blocks held by sequences and reservations (cached blocks nobody holds are free).")),
      kv_cache_utilization(Gauge(s, "tandem_kv_cache_utilization_ratio", "Used over total KV cache blocks.")),
      draining(Gauge(s, "tandem_worker_draining", "1 while the worker drains after SIGTERM.")),
      prefix_cache_queried_tokens(Counter(s, "tandem_prefix_cache_queried_tokens_total",
                                          "Tokens of admitted sequences looked up in the prefix cache.")),
      prefix_cache_hit_tokens(Counter(s, "tandem_prefix_cache_hit_tokens_total",
                                      "Tokens of admitted sequences found in the prefix cache (not computed).")),
      prefix_cache_blocks(Gauge(s, "tandem_prefix_cache_blocks",
                                "KV blocks in the prefix cache, held by sequences or evictable.")),
      prefix_cache_evictions(Counter(s, "tandem_prefix_cache_evictions_total",
                                     "Cached KV blocks evicted to make room for an allocation.")) {}

DecodeMetrics::DecodeMetrics(MetricsServer& s)
    : WorkerMetrics(s),
      batch_size(Gauge(s, "tandem_decode_batch_size", "Sequences in the last decode iteration.")),
      batch_size_per_iteration(Histogram(s, "tandem_decode_batch_size_per_iteration",
                                         "Sequences per decode iteration.",
                                         {1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512})),
      iterations(Counter(s, "tandem_decode_iterations_total", "Decode iterations run.")),
      generated_tokens(Counter(s, "tandem_decode_generated_tokens_total", "Tokens sampled by decode iterations.")),
      preemptions(Counter(s, "tandem_preemptions_total", "Sequences preempted for lack of KV blocks.")),
      kv_reservations(Gauge(s, "tandem_kv_reservations", "KV reservations waiting for their transfer.")) {}

PrefillMetrics::PrefillMetrics(MetricsServer& s, const std::string& transport)
    : WorkerMetrics(s),
      queued_prompt_tokens(Gauge(s, "tandem_prefill_queued_prompt_tokens", "Prompt tokens waiting for prefill.")),
      prompt_tokens(Counter(s, "tandem_prefill_prompt_tokens_total", "Prompt tokens prefilled.")),
      prefill_time(Histogram(s, "tandem_prefill_batch_time_seconds", "Compute time of one prefill batch.",
                             LatencyBuckets())),
      kv_transfer_time(Histogram(s, "tandem_kv_transfer_time_seconds",
                                 "Time from the end of prefill until a request's KV landed on the decode worker.",
                                 LatencyBuckets(), {{"transport", transport}})),
      kv_transfer_bytes(Counter(s, "tandem_kv_transfer_bytes_total", "KV bytes shipped to decode workers.",
                                {{"transport", transport}})),
      kv_transfer_bandwidth(&prometheus::BuildGauge()
                                 .Name("tandem_kv_transfer_bandwidth_bytes_per_second")
                                 .Help("Bandwidth of the last KV transfer (bytes over its whole duration).")
                                 .Labels(s.const_labels())
                                 .Register(s.registry())
                                 .Add({{"transport", transport}})),
      kv_transfers_failed(Counter(s, "tandem_kv_transfers_failed_total", "KV transfers that failed.",
                                  {{"transport", transport}})) {}

RouterMetrics::RouterMetrics(MetricsServer& s)
    : ttft(Histogram(s, "tandem_time_to_first_token_seconds", "Arrival at the router until the first token was sent.",
                     LatencyBuckets())),
      tpot(Histogram(s, "tandem_time_per_output_token_seconds",
                     "Per request: (last token - first token) / (tokens - 1).", TokenLatencyBuckets())),
      inter_token_latency(Histogram(s, "tandem_inter_token_latency_seconds", "Gap between consecutive tokens sent.",
                                    TokenLatencyBuckets())),
      e2e_latency(Histogram(s, "tandem_e2e_request_latency_seconds", "Arrival until the last token.",
                            LatencyBuckets())),
      queue_time(Histogram(s, "tandem_request_queue_time_seconds", "Arrival until prefill started.",
                           LatencyBuckets())),
      prefill_time(Histogram(s, "tandem_request_prefill_time_seconds", "Prefill compute of the request's batch.",
                             LatencyBuckets())),
      kv_transfer_time(Histogram(s, "tandem_request_kv_transfer_time_seconds",
                                 "KV transfer after prefill, as the prefill worker measured it.", LatencyBuckets())),
      prompt_tokens(Counter(s, "tandem_prompt_tokens_total", "Prompt tokens of admitted requests.")),
      generation_tokens(Counter(s, "tandem_generation_tokens_total", "Tokens sent to clients.")),
      requests_running(Gauge(s, "tandem_router_requests_running", "Requests in flight at the router.")),
      requests_waiting(Gauge(s, "tandem_router_requests_waiting",
                             "Requests waiting in the router's admission queue for an in-flight slot.")),
      ttft_target(Gauge(s, "tandem_slo_ttft_target_seconds", "Default TTFT objective.")),
      tpot_target(Gauge(s, "tandem_slo_tpot_target_seconds", "Default TPOT objective.")),
      requests_(&prometheus::BuildCounter()
                     .Name("tandem_requests_total")
                     .Help("Finished requests by gRPC outcome and finish reason.")
                     .Labels(s.const_labels())
                     .Register(s.registry())),
      slo_(&prometheus::BuildCounter()
                .Name("tandem_slo_requests_total")
                .Help("Successful requests judged against their TTFT/TPOT objectives (all: both met).")
                .Labels(s.const_labels())
                .Register(s.registry())) {
  // Pre-create the common series so dashboards have data before traffic.
  for (const char* o : {"ok", "cancelled", "deadline_exceeded", "resource_exhausted", "unavailable",
                        "invalid_argument", "internal"}) {
    Requests(o, std::string(o) == "ok" ? "length" : "none");
  }
  Requests("ok", "stop");
  for (const char* slo : {"ttft", "tpot", "all"}) {
    Slo(slo, true);
    Slo(slo, false);
  }
}

prometheus::Counter& RouterMetrics::Requests(const std::string& outcome, const std::string& finish_reason) {
  return requests_->Add({{"outcome", outcome}, {"finish_reason", finish_reason}});
}

prometheus::Counter& RouterMetrics::Slo(const std::string& slo, bool attained) {
  return slo_->Add({{"slo", slo}, {"attained", attained ? "true" : "false"}});
}

}  // namespace tandem
