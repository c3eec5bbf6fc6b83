#include "common/rpc/cluster_channel.h"

#include "absl/synchronization/mutex.h"

namespace tandem {
namespace {

struct Installed {
  absl::Mutex mu;
  std::shared_ptr<const ClusterSecurity> security ABSL_GUARDED_BY(mu);
};

Installed& Process() {
  // Never destroyed: channels may be made from threads still running
  // while static destructors run at exit.
  static Installed* installed = new Installed();
  return *installed;
}

}  // namespace

void SetProcessClusterSecurity(std::shared_ptr<const ClusterSecurity> security) {
  Installed& p = Process();
  absl::MutexLock lock(&p.mu);
  p.security = std::move(security);
}

std::shared_ptr<const ClusterSecurity> ProcessClusterSecurity() {
  Installed& p = Process();
  absl::MutexLock lock(&p.mu);
  if (p.security == nullptr) p.security = ClusterSecurity::Plaintext();
  return p.security;
}

std::shared_ptr<grpc::Channel> DialCluster(const std::string& address) {
  return ProcessClusterSecurity()->Dial(address);
}

}  // namespace tandem
