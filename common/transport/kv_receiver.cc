#include "common/transport/kv_receiver.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status NoAnnouncedTransfers(std::string_view transport) {
  return absl::UnimplementedError(absl::StrCat("the '", std::string(transport), "' KV transport receives no ",
                                               "announced transfers (NCCL's StartNcclTransfer)"));
}

}  // namespace tandem
