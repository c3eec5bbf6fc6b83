// The prefill side of DecodeService.HoldKvWrite: a claim on a decode
// worker's reservation that the prefill worker holds for exactly as long
// as a one-sided transfer (UCX puts, CUDA IPC copies: this process writes
// the decode worker's blocks itself) may write into it. While it is held,
// the decode worker keeps the reservation's blocks even if the router
// releases the reservation (a cancel, a deadline): a late put can never
// land in blocks another sequence got. The decode side's half is
// decode_worker/kv_write_holds.h.
//
// Lifecycle: Open sends the request at once (the prefill loop opens it
// when a prompt is first scheduled, so the round trip overlaps compute);
// WaitGranted before the first put; Held before each later put; the
// destructor ends the hold (half-close, without waiting: the decode side
// unpins as soon as it reads it, and a Claim there waits for that). It
// must be destroyed only after the transfer object, whose destructor
// drains or drops its puts. A dead prefill process ends the hold by its
// connection breaking.
//
// Threads: one owner thread (the prefill loop) calls everything; gRPC's
// callback threads complete the call. Thread-safe between the two.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tandem/v1/worker.grpc.pb.h"

namespace tandem {

class KvWriteHold {
 public:
  // Starts the call on `stub` (which must outlive the call: KvWriteHolder
  // keeps its stubs for its life). Does not wait.
  KvWriteHold(v1::DecodeService::StubInterface& stub, const std::string& transfer_id,
              const std::vector<int32_t>& dst_blocks);
  ~KvWriteHold();  // ends the hold; does not wait
  KvWriteHold(const KvWriteHold&) = delete;
  KvWriteHold& operator=(const KvWriteHold&) = delete;

  // OK once the decode worker granted the hold; its refusal otherwise
  // (NOT_FOUND: the reservation was released, expired or claimed;
  // PERMISSION_DENIED: a block is not the reservation's; UNAVAILABLE: the
  // decode worker is unreachable; UNIMPLEMENTED: it is of a version before
  // holds), or DEADLINE_EXCEEDED if no answer came
  // by `deadline`. Messages are the decode worker's own or name nothing
  // internal.
  absl::Status WaitGranted(absl::Time deadline);
  // OK while granted and neither ended by the decode side (it shut down or
  // cancelled the call) nor within a safety margin of the decode side's
  // maximum (counted from before the request was sent, so never later than
  // the decode side's own clock): a put is safe only while this is OK.
  absl::Status Held() const;
  // Granted, and either ended by the decode side or past a quarter of its
  // safe span: the loop then asks for a fresh one, so the decode side's maximum
  // bounds the time between two layers' puts, not a long prompt's compute
  // or a long step. Before any put it replaces the hold outright; while a
  // transfer writes it keeps this one until the fresh one is granted (two
  // pins overlap). A refused hold is never due (a new one would be
  // refused too).
  bool renewal_due() const;

 private:
  class Call;  // the gRPC reactor; deleted by the later of the call's end and ~KvWriteHold
  struct State;
  std::shared_ptr<State> state_;
  Call* call_;  // alive until ~KvWriteHold closed it
};

// Opens holds against decode workers by address, keeping one stub (and
// channel, with the process's cluster credentials) per decode worker.
// Prefill loop thread only.
class KvWriteHolder {
 public:
  std::unique_ptr<KvWriteHold> Open(const std::string& decode_address, const std::string& transfer_id,
                                    const std::vector<int32_t>& dst_blocks);

 private:
  std::map<std::string, std::unique_ptr<v1::DecodeService::Stub>> stubs_;
};

}  // namespace tandem
