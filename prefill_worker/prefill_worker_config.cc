#include "prefill_worker/prefill_worker_config.h"

namespace tandem {

absl::Status ValidatePrefillWorkerConfig(const PrefillWorkerConfig& c) {
  if (absl::Status s = ValidateWorkerOptions(c.worker); !s.ok()) return s;
  if (c.max_batch_tokens <= 0) return absl::InvalidArgumentError("--max_batch_tokens must be positive");
  return absl::OkStatus();
}

}  // namespace tandem
