// The process's cluster security, set once at start, and the one way
// internal channels are made: router -> workers, workers -> router,
// worker -> worker control (NCCL). Code that dials a peer deep inside a
// library (the router's registry, the NCCL control path) gets the
// process's credentials without each constructor carrying them.
#pragma once

#include <memory>
#include <string>

#include "common/rpc/tls_credentials.h"
#include "grpcpp/channel.h"

namespace tandem {

// Called by main before any internal channel is made; later channels use
// it. Until then (and in tests that never call it) internal channels are
// plaintext without tokens.
void SetProcessClusterSecurity(std::shared_ptr<const ClusterSecurity> security);
std::shared_ptr<const ClusterSecurity> ProcessClusterSecurity();

// ProcessClusterSecurity()->Dial(address).
std::shared_ptr<grpc::Channel> DialCluster(const std::string& address);

}  // namespace tandem
