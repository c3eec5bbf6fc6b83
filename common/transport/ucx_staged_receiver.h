// The decode side of the staged UCX transport (ucx_staged_transport.h):
// one UCX worker and one progress thread per exported pool. Chunk AMs are
// received (rendezvous) into host staging slots, copied from there into
// the reserved pool blocks (host-to-device for a GPU pool) and counted;
// when a transfer's FINISH has come and every chunk it counts is in the
// pool, the transfer is acknowledged on the sender's reply endpoint.
//
// Several chunks (of any transfers) are in flight at once, one per slot:
// while one slot's data is still arriving another is being copied into the
// pool. An arriving chunk that finds no free slot waits (its rendezvous is
// not started), which holds back the sender: the flow control.
//
// With a write gate (kv_transport.h), a chunk is copied into the pool only
// while it pins its transfer's live reservation, and only into that
// reservation's blocks; a chunk the gate refuses (the reservation was
// released or expired: the sender is late) fails its transfer.
//
// A failed chunk (malformed, out of range, copy error) fails its transfer;
// the transfer's later chunks are dropped and its acknowledgement, sent
// once nothing of it is in flight any more, carries the error.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/engine/model_backend.h"
#include "common/transport/kv_transport.h"
#include "common/transport/staging_copy.h"
#include "common/transport/ucx_handles.h"
#include "common/transport/ucx_staged_protocol.h"

namespace tandem {

struct StagedOptions {
  uint64_t slot_bytes = 4ull << 20;  // raised to one block's K+V if smaller
  uint32_t slots = 8;                // per side (decode: per pool; prefill: per transport)
};

class StagedReceiver {
 public:
  // `pool` (and `gate`, if not null) must outlive the receiver; `context`
  // needs UCP_FEATURE_AM.
  static absl::StatusOr<std::unique_ptr<StagedReceiver>> Start(ucp_context_h context, KvPoolView& pool,
                                                               const StagedOptions& options,
                                                               KvWriteGate* gate = nullptr);
  ~StagedReceiver();
  StagedReceiver(const StagedReceiver&) = delete;
  StagedReceiver& operator=(const StagedReceiver&) = delete;

  const std::string& address() const { return address_; }
  StagedPoolInfo info() const { return {slot_bytes_, static_cast<uint32_t>(slots_.size())}; }

 private:
  enum class SlotState { kFree, kReceiving, kReceived, kCopying };
  struct Slot {
    char* data = nullptr;
    SlotState state = SlotState::kFree;
    StagedChunkHeader header;
    uint64_t length = 0;
    uint64_t mark = 0;
    ucs_status_t recv_status = UCS_OK;
    bool pinned = false;  // holds a PinForWrite of header.transfer_id
  };
  // A chunk whose header came and whose data waits for a slot.
  struct Arrival {
    StagedChunkHeader header;
    uint64_t length = 0;
    void* desc = nullptr;  // rendezvous descriptor, or null with `eager`
    std::string eager;
  };
  struct Incoming {
    int64_t copied = 0;     // chunks in the pool
    int64_t in_flight = 0;  // chunks arrived and not yet copied or dropped
    int64_t expected = -1;  // from FINISH
    absl::Status status;
    ucp_ep_h reply_ep = nullptr;
    absl::Time touched;
  };
  struct AckSend {
    ucs_status_ptr_t request = nullptr;
    std::string header;  // alive until the send completes
  };

  StagedReceiver(KvPoolView& pool, KvWriteGate* gate) : pool_(pool), gate_(gate) {}
  static ucs_status_t OnChunk(void* arg, const void* header, size_t header_length, void* data, size_t length,
                              const ucp_am_recv_param_t* param);
  static ucs_status_t OnFinish(void* arg, const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param);
  static void OnReceived(void* request, ucs_status_t status, size_t length, void* user_data);

  void Loop(int event_fd);
  // One round of the work that is not UCX progress; true if anything moved.
  bool StartArrivals();
  bool CopyReceived();
  bool RetireCopies();
  bool SendAcks();
  void Sweep();
  void FailTransfer(const std::string& id, absl::Status status);
  // Pins the slot's reservation through the gate (OK without one).
  absl::Status Pin(Slot& slot);
  void Unpin(Slot& slot);
  bool Busy() const;

  KvPoolView& pool_;
  KvWriteGate* const gate_;
  uint64_t slot_bytes_ = 0;
  UcxWorker worker_;
  std::string address_;
  std::unique_ptr<StagingBuffer> staging_;
  std::optional<UcxMemoryRegion> region_;
  std::unique_ptr<CopyQueue> queue_;
  // Everything below is the progress thread's once it runs.
  std::vector<Slot> slots_;  // fixed size: OnReceived holds Slot pointers
  std::deque<Arrival> arrivals_;
  std::unordered_map<std::string, Incoming> transfers_;
  std::vector<AckSend> acks_;
  absl::Time last_sweep_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace tandem
