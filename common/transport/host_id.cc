#include "common/transport/host_id.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace tandem {

absl::StatusOr<std::string> ComputeHostId() {
  if (const char* env = std::getenv("TANDEM_HOST_ID"); env != nullptr && env[0] != '\0') return std::string(env);
  std::string boot_id;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::getline(in, boot_id);
  boot_id = std::string(absl::StripAsciiWhitespace(boot_id));
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  if (boot_id.empty() && host[0] == '\0') {
    return absl::NotFoundError("neither /proc/sys/kernel/random/boot_id nor the host name is available");
  }
  return absl::StrCat(boot_id, "/", host);
}

const std::string& LocalHostId() {
  // An unknown host gets an id no other process shares (its pid), so it is
  // never taken for the same host as anyone: CUDA IPC is then not chosen.
  static const std::string* id = [] {
    absl::StatusOr<std::string> s = ComputeHostId();
    return new std::string(s.ok() ? *s : absl::StrCat("unknown-host-pid-", getpid()));
  }();
  return *id;
}

}  // namespace tandem
