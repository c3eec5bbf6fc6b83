// `tandem health --address HOST:PORT`: one grpc.health.v1 Check of a
// tandem process with the cluster's credentials (--tls_*): what
// Kubernetes' exec probes run, since the kubelet's own gRPC probe speaks
// no TLS. Exit 0 when SERVING.
#pragma once

namespace tandem::cli {

int RunHealth();

}  // namespace tandem::cli
