#include "common/transport/ucx_staged_receiver.h"

#include <poll.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/transport/transfer_checks.h"
#include "common/transport/transport_selection.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

constexpr int kIdlePollMs = 10;
// A transfer that saw no chunk and no FINISH for this long was abandoned
// by its sender (which failed); its record goes.
constexpr absl::Duration kAbandoned = absl::Minutes(5);

absl::Status RegisterHandler(ucp_worker_h worker, unsigned id, ucp_am_recv_callback_t cb, void* arg) {
  ucp_am_handler_param_t p = {};
  p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                 UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
  p.id = id;
  p.cb = cb;
  p.arg = arg;
  p.flags = UCP_AM_FLAG_WHOLE_MSG;
  const ucs_status_t s = ucp_worker_set_am_recv_handler(worker, &p);
  return s == UCS_OK ? absl::OkStatus() : UcxError("ucp_worker_set_am_recv_handler", s);
}

}  // namespace

absl::StatusOr<std::unique_ptr<StagedReceiver>> StagedReceiver::Start(ucp_context_h context, KvPoolView& pool,
                                                                       const StagedOptions& options,
                                                                       KvWriteGate* gate) {
  TANDEM_RETURN_IF_ERROR(CheckExportablePool(pool, kTransportUcxStaged));
  if (options.slots == 0) return absl::InvalidArgumentError("no staging slots to export a KV pool over ucx_staged with");
  const uint64_t block_bytes = static_cast<uint64_t>(pool.layout().block_bytes());
  std::unique_ptr<StagedReceiver> r(new StagedReceiver(pool, gate));
  r->slot_bytes_ = std::max<uint64_t>(options.slot_bytes, 2 * block_bytes);
  TANDEM_ASSIGN_OR_RETURN(r->staging_, AllocateStaging(pool, r->slot_bytes_ * options.slots));
  TANDEM_ASSIGN_OR_RETURN(r->queue_, MakeCopyQueue(pool));
  TANDEM_ASSIGN_OR_RETURN(r->worker_, CreateUcxWorker(context, UCS_THREAD_MODE_MULTI));
  TANDEM_ASSIGN_OR_RETURN(r->address_, UcxWorkerAddress(r->worker_.get()));
  // Registered once, so a rendezvous into a slot needs no registration of
  // its own (and a transport with RDMA writes it directly).
  TANDEM_ASSIGN_OR_RETURN(UcxMemoryRegion region,
                          UcxMemoryRegion::Map(context, r->staging_->data(), r->staging_->size()));
  r->region_.emplace(std::move(region));
  r->slots_.resize(options.slots);
  for (uint32_t i = 0; i < options.slots; ++i) r->slots_[i].data = r->staging_->data() + i * r->slot_bytes_;
  TANDEM_RETURN_IF_ERROR(RegisterHandler(r->worker_.get(), kStagedChunkAm, &OnChunk, r.get()));
  TANDEM_RETURN_IF_ERROR(RegisterHandler(r->worker_.get(), kStagedFinishAm, &OnFinish, r.get()));
  int event_fd = -1;
  const ucs_status_t s = ucp_worker_get_efd(r->worker_.get(), &event_fd);
  if (s != UCS_OK) return UcxError("ucp_worker_get_efd", s);
  r->last_sweep_ = absl::Now();
  StagedReceiver* self = r.get();
  r->thread_ = std::thread([self, event_fd] { self->Loop(event_fd); });
  return r;
}

StagedReceiver::~StagedReceiver() {
  if (thread_.joinable()) {
    stop_ = true;
    ucp_worker_signal(worker_.get());
    thread_.join();
  }
  // The thread is gone: its state is ours. Give back what UCX lent us,
  // then let copies into the pool finish before the staging memory goes.
  for (Arrival& a : arrivals_) {
    if (a.desc != nullptr) ucp_am_data_release(worker_.get(), a.desc);
  }
  arrivals_.clear();
  for (AckSend& a : acks_) {
    if (a.request != nullptr) ucp_request_free(a.request);
  }
  acks_.clear();
  // UCX 1.13 asserts when a worker is destroyed while one of its endpoints
  // still has operations queued (a rendezvous read into a slot, the
  // release of a dropped one, a connection handshake a sender just
  // started): progress until the receives it started have ended, completed
  // or failed, and the worker has had nothing to do for a while (a TCP
  // handshake takes a few round trips). Bounded, for a sender that stopped
  // answering.
  const absl::Time until = absl::Now() + absl::Seconds(2);
  absl::Time busy_at = absl::Now();
  while (absl::Now() < until && absl::Now() - busy_at < absl::Milliseconds(50)) {
    const bool receiving = std::any_of(slots_.begin(), slots_.end(),
                                       [](const Slot& s) { return s.state == SlotState::kReceiving; });
    const bool progressed = ucp_worker_progress(worker_.get()) != 0;
    if (receiving || progressed) {
      busy_at = absl::Now();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  worker_.reset();
  queue_.reset();   // waits for the copies into the pool
  for (Slot& slot : slots_) Unpin(slot);
  region_.reset();
  staging_.reset();
}

ucs_status_t StagedReceiver::OnChunk(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                     const ucp_am_recv_param_t* param) {
  auto* self = static_cast<StagedReceiver*>(arg);
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  absl::StatusOr<StagedChunkHeader> h =
      DecodeStagedChunk(std::string_view(static_cast<const char*>(header), header_length));
  if (!h.ok()) {
    TANDEM_LOG(WARNING) << "dropping a staged KV chunk: " << h.status();
    return rndv ? UCS_ERR_INVALID_PARAM : UCS_OK;
  }
  Incoming& in = self->transfers_[h->transfer_id];
  in.touched = absl::Now();
  absl::Status valid = CheckStagedChunk(*h, length, self->pool_.layout().num_layers, self->pool_.num_blocks(),
                                        static_cast<uint64_t>(self->pool_.layout().block_bytes()), self->slot_bytes_);
  if (!valid.ok()) {
    TANDEM_LOG(WARNING) << valid;
    if (in.status.ok()) in.status = valid;
    return rndv ? UCS_ERR_INVALID_PARAM : UCS_OK;
  }
  // Later chunks of a failed transfer are not wanted; the sender hears of
  // the failure in the acknowledgement.
  if (!in.status.ok()) return rndv ? UCS_ERR_CANCELED : UCS_OK;
  ++in.in_flight;
  Arrival a;
  a.header = std::move(*h);
  a.length = length;
  if (rndv) {
    a.desc = data;  // received by StartArrivals, outside this callback
  } else {
    a.eager.assign(static_cast<const char*>(data), length);  // valid only during the callback
  }
  self->arrivals_.push_back(std::move(a));
  return rndv ? UCS_INPROGRESS : UCS_OK;
}

ucs_status_t StagedReceiver::OnFinish(void* arg, const void* header, size_t header_length, void*, size_t,
                                      const ucp_am_recv_param_t* param) {
  auto* self = static_cast<StagedReceiver*>(arg);
  absl::StatusOr<StagedFinishHeader> h =
      DecodeStagedFinish(std::string_view(static_cast<const char*>(header), header_length));
  if (!h.ok()) {
    TANDEM_LOG(WARNING) << "dropping a staged KV finish message: " << h.status();
    return UCS_OK;
  }
  Incoming& in = self->transfers_[h->transfer_id];
  in.touched = absl::Now();
  in.expected = h->chunks;
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0) in.reply_ep = param->reply_ep;
  if (in.reply_ep == nullptr) {
    TANDEM_LOG(WARNING) << "KV transfer " << h->transfer_id << ": finish message without a reply endpoint";
  }
  return UCS_OK;
}

void StagedReceiver::OnReceived(void* request, ucs_status_t status, size_t, void* user_data) {
  auto* slot = static_cast<Slot*>(user_data);
  slot->recv_status = status;
  slot->state = SlotState::kReceived;
  ucp_request_free(request);
}

void StagedReceiver::FailTransfer(const std::string& id, absl::Status status) {
  Incoming& in = transfers_[id];
  in.touched = absl::Now();
  if (in.status.ok()) {
    TANDEM_LOG(WARNING) << "KV transfer " << id << " failed on the decode side: " << status;
    in.status = std::move(status);
  }
}

absl::Status StagedReceiver::Pin(Slot& slot) {
  if (gate_ == nullptr) return absl::OkStatus();
  std::vector<int32_t> blocks;
  for (const BlockRun& r : slot.header.runs) {
    for (int32_t i = 0; i < r.count; ++i) blocks.push_back(r.dst + i);
  }
  absl::Status s = gate_->PinForWrite(slot.header.transfer_id, blocks);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat("chunk ", slot.header.chunk, " of KV transfer ", slot.header.transfer_id,
                                               " not copied into the pool: ", s.message()));
  }
  slot.pinned = true;
  return absl::OkStatus();
}

void StagedReceiver::Unpin(Slot& slot) {
  if (!slot.pinned) return;
  gate_->Unpin(slot.header.transfer_id);
  slot.pinned = false;
}

bool StagedReceiver::StartArrivals() {
  bool moved = false;
  for (Slot& slot : slots_) {
    if (arrivals_.empty()) break;
    if (slot.state != SlotState::kFree) continue;
    Arrival a = std::move(arrivals_.front());
    arrivals_.pop_front();
    moved = true;
    Incoming& in = transfers_[a.header.transfer_id];
    if (!in.status.ok()) {  // failed while this chunk waited
      if (a.desc != nullptr) ucp_am_data_release(worker_.get(), a.desc);
      --in.in_flight;
      continue;
    }
    slot.header = std::move(a.header);
    slot.length = a.length;
    if (a.desc == nullptr) {
      std::memcpy(slot.data, a.eager.data(), a.length);
      slot.recv_status = UCS_OK;
      slot.state = SlotState::kReceived;
      continue;
    }
    ucp_request_param_t p = {};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.recv_am = &OnReceived;
    p.user_data = &slot;
    slot.state = SlotState::kReceiving;
    ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker_.get(), a.desc, slot.data, a.length, &p);
    if (r == nullptr) {
      slot.recv_status = UCS_OK;
      slot.state = SlotState::kReceived;
    } else if (UCS_PTR_IS_ERR(r)) {
      slot.recv_status = UCS_PTR_STATUS(r);
      slot.state = SlotState::kReceived;
    }
  }
  return moved;
}

bool StagedReceiver::CopyReceived() {
  const uint64_t block_bytes = static_cast<uint64_t>(pool_.layout().block_bytes());
  bool moved = false;
  for (Slot& slot : slots_) {
    if (slot.state != SlotState::kReceived) continue;
    moved = true;
    const std::string& id = slot.header.transfer_id;
    absl::Status s = slot.recv_status == UCS_OK ? absl::OkStatus()
                                                : UcxError(absl::StrCat("receiving a chunk of KV transfer ", id),
                                                           slot.recv_status);
    // The transfer may have failed while this chunk was on its way.
    if (s.ok() && !transfers_[id].status.ok()) s = transfers_[id].status;
    if (s.ok()) s = Pin(slot);
    // K of every run, then V of every run (ucx_staged_protocol.h).
    const char* k = slot.data;
    const char* v = slot.data + slot.header.blocks() * block_bytes;
    for (const BlockRun& r : slot.header.runs) {
      if (!s.ok()) break;
      const size_t bytes = static_cast<size_t>(r.count) * block_bytes;
      s = queue_->Copy(pool_.KeyBlock(slot.header.layer, r.dst), k, bytes);
      if (s.ok()) s = queue_->Copy(pool_.ValueBlock(slot.header.layer, r.dst), v, bytes);
      k += bytes;
      v += bytes;
    }
    absl::StatusOr<uint64_t> mark = s.ok() ? queue_->Mark() : absl::StatusOr<uint64_t>(s);
    if (mark.ok()) {
      slot.mark = *mark;
      slot.state = SlotState::kCopying;
      continue;
    }
    // Copies already queued may still write the pool: wait for them
    // before the failure lets the reservation go.
    queue_->Drain().IgnoreError();
    Unpin(slot);
    FailTransfer(id, mark.status());
    --transfers_[id].in_flight;
    slot.state = SlotState::kFree;
  }
  return moved;
}

bool StagedReceiver::RetireCopies() {
  bool moved = false;
  for (Slot& slot : slots_) {
    if (slot.state != SlotState::kCopying) continue;
    absl::StatusOr<bool> reached = queue_->Reached(slot.mark);
    if (reached.ok() && !*reached) continue;
    moved = true;
    Incoming& in = transfers_[slot.header.transfer_id];
    if (reached.ok()) {
      ++in.copied;
    } else {
      // A failed copy queue leaves nothing running that could still write.
      FailTransfer(slot.header.transfer_id, reached.status());
    }
    Unpin(slot);
    --in.in_flight;
    in.touched = absl::Now();
    slot.state = SlotState::kFree;
  }
  return moved;
}

bool StagedReceiver::SendAcks() {
  bool moved = false;
  for (auto it = transfers_.begin(); it != transfers_.end();) {
    Incoming& in = it->second;
    // Acknowledged only once nothing of the transfer is in flight: after
    // the ack the reservation may be freed and its blocks reused.
    const bool done = in.expected >= 0 && in.in_flight == 0 && (!in.status.ok() || in.copied >= in.expected);
    if (!done || in.reply_ep == nullptr) {
      ++it;
      continue;
    }
    StagedAckHeader ack{it->first, static_cast<int32_t>(in.status.code()), std::string(in.status.message())};
    if (in.status.ok() && in.copied != in.expected) {
      ack.code = static_cast<int32_t>(absl::StatusCode::kDataLoss);
      ack.message = absl::StrCat(in.copied, " chunks arrived, the sender counted ", in.expected);
    }
    AckSend send;
    send.header = EncodeStagedAck(ack);
    ucp_request_param_t p = {};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_EAGER;
    send.request = ucp_am_send_nbx(in.reply_ep, kStagedAckAm, send.header.data(), send.header.size(), nullptr, 0, &p);
    if (UCS_PTR_IS_ERR(send.request)) {
      TANDEM_LOG(WARNING) << "acknowledging KV transfer " << it->first << ": "
                          << ucs_status_string(UCS_PTR_STATUS(send.request));
    } else if (send.request != nullptr) {
      acks_.push_back(std::move(send));
    }
    it = transfers_.erase(it);
    moved = true;
  }
  for (auto it = acks_.begin(); it != acks_.end();) {
    const ucs_status_t s = ucp_request_check_status(it->request);
    if (s == UCS_INPROGRESS) {
      ++it;
      continue;
    }
    ucp_request_free(it->request);
    it = acks_.erase(it);
    moved = true;
  }
  return moved;
}

void StagedReceiver::Sweep() {
  const absl::Time now = absl::Now();
  if (now - last_sweep_ < absl::Seconds(10)) return;
  last_sweep_ = now;
  std::erase_if(transfers_, [&](const auto& entry) {
    return entry.second.in_flight == 0 && now - entry.second.touched > kAbandoned;
  });
}

bool StagedReceiver::Busy() const {
  if (!arrivals_.empty() || !acks_.empty()) return true;
  for (const Slot& s : slots_) {
    if (s.state != SlotState::kFree) return true;
  }
  return false;
}

void StagedReceiver::Loop(int event_fd) {
  ucp_worker_h worker = worker_.get();
  int idle_rounds = 0;
  while (!stop_.load()) {
    bool moved = false;
    while (ucp_worker_progress(worker) != 0) moved = true;
    moved |= StartArrivals();
    moved |= CopyReceived();
    moved |= RetireCopies();
    moved |= SendAcks();
    Sweep();
    if (moved) {
      idle_rounds = 0;
      continue;
    }
    if (Busy()) {
      // Copies or receives in flight: poll them, briefly yielding the core.
      if (++idle_rounds > 100) std::this_thread::sleep_for(std::chrono::microseconds(20));
      continue;
    }
    const ucs_status_t s = ucp_worker_arm(worker);
    if (s == UCS_ERR_BUSY) continue;
    if (s != UCS_OK) {
      TANDEM_LOG(WARNING) << "ucp_worker_arm: " << ucs_status_string(s);
      std::this_thread::sleep_for(std::chrono::milliseconds(kIdlePollMs));
      continue;
    }
    pollfd p = {event_fd, POLLIN, 0};
    poll(&p, 1, kIdlePollMs);
  }
}

}  // namespace tandem
