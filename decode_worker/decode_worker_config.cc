#include "decode_worker/decode_worker_config.h"

namespace tandem {

absl::Status ValidateDecodeWorkerConfig(const DecodeWorkerConfig& c) {
  if (absl::Status s = ValidateWorkerOptions(c.worker); !s.ok()) return s;
  if (c.max_batch_size <= 0) return absl::InvalidArgumentError("--max_batch_size must be positive");
  if (c.max_batch_tokens < c.max_batch_size) {
    return absl::InvalidArgumentError("--max_batch_tokens must be at least --max_batch_size");
  }
  return absl::OkStatus();
}

}  // namespace tandem
