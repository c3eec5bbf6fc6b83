#include "decode_worker/decode_worker_config.h"

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status ValidateDecodeWorkerConfig(const DecodeWorkerConfig& c) {
  if (c.router.empty()) return absl::InvalidArgumentError("--router is required (host:port)");
  if (c.listen.find(':') == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--listen '", c.listen, "' is not host:port"));
  }
  if (c.device != "cpu" && c.device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--device '", c.device, "' is not cpu or cuda"));
  }
  if (c.backend.num_kv_blocks <= 0) return absl::InvalidArgumentError("--num_kv_blocks must be positive");
  if (c.backend.block_size <= 0) return absl::InvalidArgumentError("--block_size must be positive");
  if (c.max_batch_size <= 0) return absl::InvalidArgumentError("--max_batch_size must be positive");
  if (c.max_batch_tokens < c.max_batch_size) {
    return absl::InvalidArgumentError("--max_batch_tokens must be at least --max_batch_size");
  }
  if (c.drain_timeout_seconds < 0) return absl::InvalidArgumentError("--drain_timeout_seconds < 0");
  return absl::OkStatus();
}

}  // namespace tandem
