#include "decode_worker/decode_worker_config.h"

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status ValidateDecodeWorkerConfig(const DecodeWorkerConfig& c) {
  if (absl::Status s = ValidateWorkerOptions(c.worker); !s.ok()) return s;
  if (absl::Status s = ValidateSchedulerOptions(c.scheduler); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--", s.message()));
  }
  if (c.role != "decode" && c.role != "aggregated") {
    return absl::InvalidArgumentError(absl::StrCat("--role must be decode or aggregated, got '", c.role, "'"));
  }
  if (!(c.kv_write_hold_max_seconds > 0)) {
    return absl::InvalidArgumentError("--kv_write_hold_max_seconds must be positive");
  }
  return absl::OkStatus();
}

}  // namespace tandem
