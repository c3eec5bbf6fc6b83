#include "common/transport/ucx_staged_sender.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

void OnPeerError(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* peer = static_cast<StagedPeer*>(arg);
  peer->failed = true;
  TANDEM_LOG(WARNING) << "staged UCX connection to decode worker " << peer->worker_id
                      << " failed: " << ucs_status_string(status);
}

// How a thread polling in-flight work waits between rounds in which
// nothing moved, with the send mutex released: yield first (a rendezvous
// step or a copy is usually microseconds away), then short sleeps. Past
// ~20k idle rounds (a fraction of a second: a decode side out of slots, or
// a dead peer that shared memory cannot detect) the progress thread sleeps
// longer, so a stalled transfer does not keep a core busy.
void Backoff(int idle_rounds, bool long_sleeps) {
  if (idle_rounds <= 100) {
    std::this_thread::yield();
  } else if (long_sleeps && idle_rounds > 20000) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace

void StagedPeer::Close(bool force) {
  if (closed) return;
  closed = true;
  if (ep) ep->Close(force || failed.load());
  ep.reset();
}

StagedSender::~StagedSender() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, peer] : peers_) peer->Close(/*force=*/true);
  peers_.clear();
  // Force-closed endpoints completed their requests (with errors).
  for (StagedSendItem& item : items_) {
    if (item.request != nullptr) ucp_request_free(item.request);
  }
  items_.clear();  // drops the transfers' copy queues (drained first)
  region_.reset();
  staging_.reset();
  worker_.reset();
}

ucs_status_t StagedSender::OnAck(void* arg, const void* header, size_t header_length, void*, size_t,
                                 const ucp_am_recv_param_t*) {
  auto* self = static_cast<StagedSender*>(arg);
  absl::StatusOr<StagedAckHeader> ack =
      DecodeStagedAck(std::string_view(static_cast<const char*>(header), header_length));
  if (!ack.ok()) {
    TANDEM_LOG(WARNING) << "dropping a staged KV acknowledgement: " << ack.status();
    return UCS_OK;
  }
  auto it = self->awaiting_ack_.find(ack->transfer_id);
  if (it == self->awaiting_ack_.end()) return UCS_OK;  // its transfer gave up
  if (std::shared_ptr<StagedTxState> tx = it->second.lock()) tx->ack = std::move(*ack);
  return UCS_OK;
}

absl::StatusOr<std::shared_ptr<StagedPeer>> StagedSender::ConnectLocked(const v1::KvPoolDescriptor& dest,
                                                                        const StagedPoolInfo& info,
                                                                        absl::Time deadline) {
  if (worker_ == nullptr) {
    TANDEM_ASSIGN_OR_RETURN(UcxWorker worker, CreateUcxWorker(context_, UCS_THREAD_MODE_SERIALIZED));
    ucp_am_handler_param_t p = {};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                   UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    p.id = kStagedAckAm;
    p.cb = &OnAck;
    p.arg = this;
    p.flags = UCP_AM_FLAG_WHOLE_MSG;
    const ucs_status_t s = ucp_worker_set_am_recv_handler(worker.get(), &p);
    if (s != UCS_OK) return UcxError("ucp_worker_set_am_recv_handler", s);
    worker_ = std::move(worker);
    // It blocks on mu_, held here, until this call returns.
    thread_ = std::thread([this] { Loop(); });
  }
  auto it = peers_.find(dest.worker_id());
  if (it != peers_.end()) {
    if (it->second->usable() && it->second->address == dest.endpoint() && it->second->info == info) return it->second;
    DropPeerLocked(it->second);  // restarted or failed
  }
  auto peer = std::make_shared<StagedPeer>();
  peer->worker_id = dest.worker_id();
  peer->address = dest.endpoint();
  peer->info = info;
  absl::StatusOr<UcxEndpoint> ep = UcxEndpoint::Connect(worker_.get(), dest.endpoint(), OnPeerError, peer.get());
  if (!ep.ok()) {
    return absl::Status(ep.status().code(),
                        absl::StrCat("connecting to decode worker ", dest.worker_id(), ": ", ep.status().message()));
  }
  peer->ep.emplace(std::move(*ep));
  if (absl::Status s = CompleteUcxHandshake(worker_.get(), peer->ep->get(), dest.worker_id(), deadline); !s.ok()) {
    peer->failed = true;
    return s;
  }
  peers_[dest.worker_id()] = peer;
  return peer;
}

absl::Status StagedSender::EnsureSlotsLocked(KvPoolView& pool) {
  if (staging_ != nullptr) return absl::OkStatus();
  const uint64_t block_bytes = static_cast<uint64_t>(pool.layout().block_bytes());
  const uint64_t slot_bytes = std::max<uint64_t>(options_.slot_bytes, 2 * block_bytes);
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<StagingBuffer> staging, AllocateStaging(pool, slot_bytes * options_.slots));
  TANDEM_ASSIGN_OR_RETURN(UcxMemoryRegion region, UcxMemoryRegion::Map(context_, staging->data(), staging->size()));
  staging_ = std::move(staging);
  region_.emplace(std::move(region));
  slot_bytes_ = slot_bytes;
  for (uint32_t i = options_.slots; i > 0; --i) free_slots_.push_back(i - 1);
  return absl::OkStatus();
}

void StagedSender::EnqueueLocked(StagedSendItem item) {
  ++item.tx->outstanding;
  items_.push_back(std::move(item));
  work_.notify_one();
}

void StagedSender::NoteFinishSentLocked(StagedTxState& tx) {
  tx.finish_sent = true;
  work_.notify_one();
}

void StagedSender::DropPeerLocked(const std::shared_ptr<StagedPeer>& peer) {
  peer->Close(/*force=*/true);
  auto it = peers_.find(peer->worker_id);
  if (it != peers_.end() && it->second == peer) peers_.erase(it);
}

void StagedSender::DisconnectLocked(const std::string& worker_id) {
  auto it = peers_.find(worker_id);
  if (it == peers_.end()) return;
  it->second->Close(/*force=*/false);
  peers_.erase(it);
}

bool StagedSender::PumpLocked() {
  bool moved = false;
  if (worker_ != nullptr) {
    for (int i = 0; i < 8 && ucp_worker_progress(worker_.get()) != 0; ++i) moved = true;
  }
  for (auto it = items_.begin(); it != items_.end();) {
    StagedSendItem& item = *it;
    StagedTxState& tx = *item.tx;
    bool done = false;
    if (!item.sending) {
      // The slot is written by the copy until its mark: never reuse or
      // send it before, failed transfer or not.
      absl::StatusOr<bool> copied = tx.queue->Reached(item.mark);
      if (copied.ok() && !*copied) {
        ++it;
        continue;
      }
      moved = true;
      done = true;
      if (!copied.ok()) {
        tx.Fail(copied.status());
      } else if (!tx.status.ok()) {
        // dropped: the transfer already failed
      } else if (!tx.peer->usable()) {
        tx.Fail(absl::UnavailableError(absl::StrCat("KV transfer ", tx.id, ": the connection to decode worker ",
                                                    tx.peer->worker_id, " is gone")));
      } else {
        ucp_request_param_t p = {};
        p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        p.flags = UCP_AM_SEND_FLAG_RNDV;  // the receiver picks the slot it lands in
        ucs_status_ptr_t r = ucp_am_send_nbx(tx.peer->ep->get(), kStagedChunkAm, item.header.data(),
                                             item.header.size(), SlotData(item.slot), item.length, &p);
        if (UCS_PTR_IS_ERR(r)) {
          tx.Fail(UcxError(absl::StrCat("KV transfer ", tx.id, ": ucp_am_send_nbx"), UCS_PTR_STATUS(r)));
        } else if (r != nullptr) {
          item.sending = true;
          item.request = r;
          done = false;
        }
      }
    }
    if (item.sending) {
      const ucs_status_t s = ucp_request_check_status(item.request);
      if (s == UCS_INPROGRESS) {
        ++it;
        continue;
      }
      ucp_request_free(item.request);
      item.request = nullptr;
      if (s != UCS_OK) {
        // Cancelled or invalid while our endpoint is sound: the receiver's
        // handler said no (ucx_staged_receiver.cc), not the network.
        const bool refused = s == UCS_ERR_CANCELED || s == UCS_ERR_INVALID_PARAM;
        if (tx.status.ok() && refused && tx.peer->usable()) tx.refused = true;
        tx.Fail(UcxError(absl::StrCat("KV transfer ", tx.id, ": sending a chunk"), s));
      }
      moved = true;
      done = true;
    }
    if (done) {
      free_slots_.push_back(item.slot);
      --tx.outstanding;
      it = items_.erase(it);  // may release the transfer's last reference (and its peer's): under mu_
    } else {
      ++it;
    }
  }
  return moved;
}

absl::StatusOr<uint32_t> StagedSender::AcquireSlot(std::unique_lock<std::mutex>& lock, absl::Time deadline) {
  int idle = 0;
  while (free_slots_.empty()) {
    PumpLocked();
    if (!free_slots_.empty()) break;
    if (absl::Now() > deadline) return absl::DeadlineExceededError("no staging slot freed before the deadline");
    lock.unlock();
    Backoff(++idle, /*long_sleeps=*/false);
    lock.lock();
  }
  const uint32_t slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

bool StagedSender::BusyLocked() const {
  if (!items_.empty()) return true;
  for (const auto& [id, weak] : awaiting_ack_) {
    const std::shared_ptr<StagedTxState> tx = weak.lock();
    if (tx != nullptr && tx->finish_sent && !tx->ack.has_value()) return true;
  }
  return false;
}

// Polling rather than ucp_worker_arm + the event fd (as the receiver does
// when idle): what the thread waits for while busy is partly not UCX (a
// device-to-host copy's CUDA event never signals the fd), and the
// transfers' callers progress the same worker between its rounds, which
// would consume the events an armed wait relies on. Idle, it costs nothing:
// it blocks on `work_` until a chunk or a FINISH is queued.
void StagedSender::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  int idle = 0;
  while (!stop_) {
    if (!BusyLocked()) {
      idle = 0;
      work_.wait(lock, [this] { return stop_ || BusyLocked(); });
      continue;
    }
    const bool moved = PumpLocked();
    // One round per hold: a SendLayer or Finish caller waiting for mu_
    // gets it between rounds.
    lock.unlock();
    if (moved) {
      idle = 0;
      std::this_thread::yield();
    } else {
      Backoff(++idle, /*long_sleeps=*/true);
    }
    lock.lock();
  }
}

}  // namespace tandem
