// Which machine this process runs on, for transports that work only
// between processes of one host (CUDA IPC). Two processes are on the same
// host when their ids are equal.
//
// The id is "<boot id>/<host name>": the kernel's boot id
// (/proc/sys/kernel/random/boot_id) changes with every boot and differs
// between machines; the host name tells apart containers that share a
// kernel but not an IPC namespace (two Kubernetes pods on one node have
// different host names and cannot open each other's CUDA IPC handles
// unless both run with hostIPC). TANDEM_HOST_ID, when set, replaces it:
// for pods that do share the host's IPC namespace, and for tests that
// pretend to be another host.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace tandem {

// Computed once per process (the environment variable is read then).
const std::string& LocalHostId();

// The uncached computation behind LocalHostId (tests).
absl::StatusOr<std::string> ComputeHostId();

}  // namespace tandem
