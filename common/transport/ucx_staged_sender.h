// The prefill side of the staged UCX transport (ucx_staged_transport.h),
// below the transfers: the send worker, the connections to decode workers,
// the send slots and the chunks in them, and the progress thread that moves
// those chunks while the transfers' callers are away (computing the next
// layer). Internal to the transport.
//
// Threads: one mutex, mu(), guards everything here, and every UCX call on
// the send worker or its endpoints and requests is made under it (the
// worker is UCS_THREAD_MODE_SERIALIZED). Two kinds of threads take it:
//  - the transfers' callers (StartTransfer, SendLayer, Finish, Disconnect),
//    which queue chunks and FINISH messages and may pump themselves;
//  - the progress thread, started with the send worker and joined first
//    in the destructor. While any chunk is queued or any FINISH awaits its
//    acknowledgement it pumps (PumpLocked) once per lock hold, with a
//    yield or a short sleep in between without the lock, so a caller never
//    waits longer than one round for it; otherwise it sleeps on a
//    condition variable that queueing signals.
#pragma once

#include <ucp/api/ucp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/engine/model_backend.h"
#include "common/transport/staging_copy.h"
#include "common/transport/ucx_handles.h"
#include "common/transport/ucx_staged_protocol.h"
#include "common/transport/ucx_staged_receiver.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// A connection to one decode worker's receiver. Members other than
// `failed` are guarded by the sender's mutex, and so is the last release
// of a shared_ptr<StagedPeer> (closing the endpoint progresses the worker).
struct StagedPeer {
  std::string worker_id;
  std::string address;
  StagedPoolInfo info;
  std::atomic<bool> failed{false};  // set by UCX's error handler
  bool closed = false;
  std::optional<UcxEndpoint> ep;

  bool usable() const { return !closed && !failed.load(); }
  void Close(bool force);
  ~StagedPeer() { Close(/*force=*/true); }
};

// What one transfer's in-flight chunks share with it; guarded by the
// sender's mutex. Outlives the transfer while chunks of it are in flight.
struct StagedTxState {
  std::string id;
  std::shared_ptr<StagedPeer> peer;
  std::unique_ptr<CopyQueue> queue;  // device -> slot copies, in order
  absl::Status status;               // the first failure
  // The first failure was the decode side turning a chunk away (its AM
  // handler refused the rendezvous): the endpoint is sound, and the reason
  // comes in the acknowledgement of FINISH.
  bool refused = false;
  int64_t outstanding = 0;           // chunks in the sender's list
  bool finish_sent = false;          // FINISH posted: the ack is due
  std::optional<StagedAckHeader> ack;

  void Fail(absl::Status s) {
    if (status.ok()) status = std::move(s);
  }
};

// A chunk in a send slot: first its copy into the slot runs (sending ==
// false), then its AM is in flight. The slot is free again when both are.
struct StagedSendItem {
  std::shared_ptr<StagedTxState> tx;
  uint32_t slot = 0;
  uint64_t mark = 0;
  std::string header;  // alive until the send completes
  uint64_t length = 0;
  bool sending = false;
  ucs_status_ptr_t request = nullptr;
};

class StagedSender {
 public:
  // `context` (UCP_FEATURE_AM | UCP_FEATURE_WAKEUP) must outlive the sender.
  StagedSender(ucp_context_h context, const StagedOptions& options) : context_(context), options_(options) {}
  // Stops the progress thread, then force-closes the connections (their
  // sends complete with errors) and frees the slots.
  ~StagedSender();
  StagedSender(const StagedSender&) = delete;
  StagedSender& operator=(const StagedSender&) = delete;

  std::mutex& mu() { return mu_; }

  // With mu() held from here on.

  // The cached connection to `dest`'s receiver, or a new one (handshake
  // completed). Creates the send worker and starts the progress thread on
  // first use.
  absl::StatusOr<std::shared_ptr<StagedPeer>> ConnectLocked(const v1::KvPoolDescriptor& dest,
                                                            const StagedPoolInfo& info, absl::Time deadline);
  // Allocates the send slots, suited to `pool` (pinned for a GPU pool), once.
  absl::Status EnsureSlotsLocked(KvPoolView& pool);
  uint64_t slot_bytes() const { return slot_bytes_; }
  char* SlotData(uint32_t slot) const { return staging_->data() + slot * slot_bytes_; }
  // A free slot, pumping until one is; DEADLINE_EXCEEDED past `deadline`.
  // Unlocks `lock` (on mu()) between rounds.
  absl::StatusOr<uint32_t> AcquireSlot(std::unique_lock<std::mutex>& lock, absl::Time deadline);
  // A slot that got no chunk (its copy failed; the queue is drained).
  void ReleaseSlotLocked(uint32_t slot) { free_slots_.push_back(slot); }
  // Hands a chunk whose copy is queued to the pump and the progress thread.
  void EnqueueLocked(StagedSendItem item);
  // The transfer's acknowledgement lands in `tx->ack` from now until
  // ForgetLocked; NoteFinishSentLocked makes the progress thread wait for it.
  void ExpectAckLocked(const std::shared_ptr<StagedTxState>& tx) { awaiting_ack_[tx->id] = tx; }
  void NoteFinishSentLocked(StagedTxState& tx);
  void ForgetLocked(const std::string& transfer_id) { awaiting_ack_.erase(transfer_id); }
  // Advances every in-flight chunk: progresses the worker, posts the AM of
  // each chunk whose copy into its slot is done, frees the slot of each
  // whose AM completed. True if anything moved.
  bool PumpLocked();
  void DropPeerLocked(const std::shared_ptr<StagedPeer>& peer);
  void DisconnectLocked(const std::string& worker_id);

 private:
  static ucs_status_t OnAck(void* arg, const void* header, size_t header_length, void*, size_t,
                            const ucp_am_recv_param_t*);
  // Chunks in flight or an acknowledgement due: the progress thread's work.
  bool BusyLocked() const;
  void Loop();

  ucp_context_h const context_;
  const StagedOptions options_;

  std::mutex mu_;
  std::condition_variable work_;  // signalled when BusyLocked() may have become true, or on stop
  bool stop_ = false;
  std::thread thread_;
  UcxWorker worker_;
  std::unordered_map<std::string, std::shared_ptr<StagedPeer>> peers_;
  std::unique_ptr<StagingBuffer> staging_;
  std::optional<UcxMemoryRegion> region_;
  uint64_t slot_bytes_ = 0;
  std::vector<uint32_t> free_slots_;
  std::list<StagedSendItem> items_;
  std::unordered_map<std::string, std::weak_ptr<StagedTxState>> awaiting_ack_;
};

}  // namespace tandem
