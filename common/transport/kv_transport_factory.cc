#include "absl/strings/str_cat.h"
#include "common/transport/inproc_transport.h"
#include "common/transport/kv_transport.h"
#include "common/transport/ucx_transport.h"

namespace tandem {

absl::StatusOr<std::unique_ptr<KvTransport>> CreateKvTransport(std::string_view name) {
  if (name == "ucx") return MakeUcxTransport();
  if (name == "inproc") return MakeInProcessTransport();
  return absl::InvalidArgumentError(absl::StrCat("unknown KV transport '", std::string(name), "' (ucx, inproc)"));
}

}  // namespace tandem
