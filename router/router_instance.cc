#include "router/router_instance.h"

#include <cstdint>
#include <random>

#include "absl/strings/str_format.h"

namespace tandem::router {

const std::string& RouterInstanceId() {
  // A function-local static: drawn on first use, thread-safe by the language.
  static const std::string id = [] {
    std::random_device entropy;
    const uint64_t bits = (uint64_t{entropy()} << 32) ^ entropy();
    return absl::StrFormat("%016x", bits);
  }();
  return id;
}

}  // namespace tandem::router
