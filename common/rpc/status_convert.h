// absl::Status <-> grpc::Status. Codes map one to one (both follow
// google.rpc.Code), so errors keep their meaning across process hops.
#pragma once

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace tandem {

grpc::Status ToGrpcStatus(const absl::Status& s);
absl::Status FromGrpcStatus(const grpc::Status& s);
// FromGrpcStatus with `what` ("decode worker 127.0.0.1:5001") prefixed to
// the message, so the client learns which hop failed.
absl::Status FromGrpcStatus(const grpc::Status& s, std::string_view what);

}  // namespace tandem
