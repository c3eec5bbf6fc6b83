// tandem_kv_transfers_total{transport, outcome}: one count per KV transfer
// that started, labelled by the transport that moved it. With
// --transport=auto the worker-level metrics say "auto"; this says which
// transport each destination was actually reached over.
#pragma once

#include <string>
#include <string_view>

#include "common/metrics/metrics_server.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"

namespace tandem {

class TransferCounter {
 public:
  explicit TransferCounter(MetricsServer& server)
      : family_(&prometheus::BuildCounter()
                     .Name("tandem_kv_transfers_total")
                     .Help("KV transfers by the transport that moved them and their outcome (ok, failed).")
                     .Labels(server.const_labels())
                     .Register(server.registry())) {}

  // Thread-safe (the family finds or adds the labelled counter under its lock).
  void Count(std::string_view transport, bool ok) {
    family_->Add({{"transport", std::string(transport)}, {"outcome", ok ? "ok" : "failed"}}).Increment();
  }

 private:
  prometheus::Family<prometheus::Counter>* family_;
};

}  // namespace tandem
