// A client interceptor that adds one fixed metadata entry to every call
// of a channel: how the cluster token and the public API's bearer token
// travel. Unlike call credentials, it also works on plaintext channels
// (gRPC sends call credentials only over secure ones), and the callers of
// internal stubs need no change.
#pragma once

#include <memory>
#include <string>

#include "grpcpp/support/client_interceptor.h"

namespace tandem {

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> MakeMetadataInterceptorFactory(
    std::string key, std::string value);

}  // namespace tandem
