#include "common/worker/fault_injector.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status FaultInjector::MaybeFail(std::string_view what) {
  if (rate_ <= 0.0) return absl::OkStatus();
  double draw;
  {
    std::lock_guard<std::mutex> lock(mu_);
    draw = std::uniform_real_distribution<double>(0.0, 1.0)(gen_);
  }
  if (draw >= rate_) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("injected fault: ", std::string(what)));
}

}  // namespace tandem
