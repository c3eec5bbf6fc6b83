#include "prefill_worker/prefill_worker_config.h"

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status ValidatePrefillWorkerConfig(const PrefillWorkerConfig& c) {
  if (absl::Status s = ValidateWorkerOptions(c.worker); !s.ok()) return s;
  if (absl::Status s = ValidateSchedulerOptions(c.scheduler); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", s.message()));
  }
  if (!(c.kv_transfer_finish_timeout_seconds > 0)) {
    return absl::InvalidArgumentError("--kv_transfer_finish_timeout_seconds must be positive");
  }
  return absl::OkStatus();
}

}  // namespace tandem
