// For the two-process NCCL GPU test and benchmark: an NcclControl that
// carries the transfer requests to the decode child as pipe messages
// (pipe_messages.h), standing in for the gRPC RPC.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>

#include "common/transport/nccl_transport.h"
#include "tests/common/transport/pipe_messages.h"

namespace tandem {

// The request out, the decode side's status back ("" for OK).
class PipeControl final : public NcclControl {
 public:
  PipeControl(int out, int in) : out_(out), in_(in) {}
  absl::Status Send(const std::string&, const v1::NcclTransferRequest& req, absl::Time) override {
    std::string reply;
    if (!WriteMsg(out_, req.SerializeAsString()) || !ReadMsg(in_, &reply)) {
      return absl::UnavailableError("the decode child is gone");
    }
    return reply.empty() ? absl::OkStatus() : absl::UnavailableError(reply);
  }

 private:
  int out_, in_;
};

// The decode child's side: serves requests until an empty message,
// answering each; returns the transfer ids, or false on a broken pipe.
inline bool ServeRequests(KvTransport& t, int from_parent, int to_parent, std::vector<std::string>* ids) {
  for (;;) {
    std::string bytes;
    if (!ReadMsg(from_parent, &bytes)) return false;
    if (bytes.empty()) return true;
    v1::NcclTransferRequest req;
    if (!req.ParseFromString(bytes)) return false;
    std::vector<int32_t> reserved(req.dst_blocks().begin(), req.dst_blocks().end());
    absl::Status s = t.receiver()->AcceptAnnouncedTransfer(req, reserved, [](const std::string& id) {
      fprintf(stderr, "receive of %s failed\n", id.c_str());
    });
    ids->push_back(req.transfer_id());
    if (!WriteMsg(to_parent, s.ok() ? "" : s.ToString())) return false;
  }
}

}  // namespace tandem
