#include "common/transport/ucx_staged_transport.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/transport/block_runs.h"
#include "common/transport/transport_selection.h"
#include "common/transport/ucx_handles.h"
#include "common/transport/ucx_staged_protocol.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

constexpr absl::Duration kConnectTimeout = absl::Seconds(5);

// A connection to one decode worker's receiver. Members other than
// `failed` are guarded by the transport's send mutex, and so is the last
// release of a shared_ptr<StagedPeer> (closing the endpoint progresses the
// send worker).
struct StagedPeer {
  std::string worker_id;
  std::string address;
  StagedPoolInfo info;
  std::atomic<bool> failed{false};  // set by UCX's error handler
  bool closed = false;
  std::optional<UcxEndpoint> ep;

  bool usable() const { return !closed && !failed.load(); }
  void Close(bool force) {
    if (closed) return;
    closed = true;
    if (ep) ep->Close(force || failed.load());
    ep.reset();
  }
  ~StagedPeer() { Close(/*force=*/true); }
};

void OnPeerError(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* peer = static_cast<StagedPeer*>(arg);
  peer->failed = true;
  TANDEM_LOG(WARNING) << "staged UCX connection to decode worker " << peer->worker_id
                      << " failed: " << ucs_status_string(status);
}

// What one transfer's in-flight chunks share with it; guarded by the send
// mutex. Outlives the transfer while chunks of it are still in flight.
struct TxState {
  std::string id;
  std::shared_ptr<StagedPeer> peer;
  std::unique_ptr<CopyQueue> queue;  // device -> slot copies, in order
  absl::Status status;               // the first failure
  int64_t outstanding = 0;           // chunks in the transport's list
  std::optional<StagedAckHeader> ack;

  void Fail(absl::Status s) {
    if (status.ok()) status = std::move(s);
  }
};

// A chunk in a send slot: first its copy into the slot runs (sending ==
// false), then its AM is in flight. The slot is free again when both are.
struct SendItem {
  std::shared_ptr<TxState> tx;
  uint32_t slot = 0;
  uint64_t mark = 0;
  std::string header;  // alive until the send completes
  uint64_t length = 0;
  bool sending = false;
  ucs_status_ptr_t request = nullptr;
};

class UcxStagedTransport;

class StagedTransfer final : public KvTransfer {
 public:
  StagedTransfer(UcxStagedTransport& transport, std::shared_ptr<TxState> tx, KvPoolView& src,
                 v1::KvPoolDescriptor dest, KvTransferSpec spec, std::vector<StagingChunk> chunks)
      : transport_(transport),
        tx_(std::move(tx)),
        src_(src),
        dest_(std::move(dest)),
        spec_(std::move(spec)),
        chunks_(std::move(chunks)) {}
  ~StagedTransfer() override;

  absl::Status SendLayer(int layer) override;
  absl::Status Finish() override { return FinishBy(spec_.deadline); }
  int64_t bytes_sent() const override { return bytes_; }
  const std::string& id() const override { return spec_.transfer_id; }
  std::string_view transport() const override { return kTransportUcxStaged; }
  void MarkLate() { result_ = absl::DeadlineExceededError(absl::StrCat(Describe(), " missed its deadline")); }

 private:
  absl::Status FinishBy(absl::Time deadline);
  absl::Status Fail(absl::Status s);
  std::string Describe() const {
    return absl::StrCat("KV transfer ", spec_.transfer_id, " to decode worker ", dest_.worker_id(), " (staged UCX)");
  }

  UcxStagedTransport& transport_;
  std::shared_ptr<TxState> tx_;  // null only for a transfer born late
  KvPoolView& src_;
  v1::KvPoolDescriptor dest_;
  KvTransferSpec spec_;
  std::vector<StagingChunk> chunks_;  // one layer's chunks (the same for every layer)
  uint32_t chunks_sent_ = 0;
  int64_t bytes_ = 0;
  std::string finish_header_;
  ucs_status_ptr_t finish_request_ = nullptr;  // guarded by the send mutex
  std::optional<absl::Status> result_;
};

class UcxStagedTransport final : public KvTransport {
 public:
  static absl::StatusOr<std::unique_ptr<UcxStagedTransport>> Create(const StagedOptions& options) {
    std::unique_ptr<UcxStagedTransport> t(new UcxStagedTransport(options));
    TANDEM_ASSIGN_OR_RETURN(t->context_, CreateUcxContext(UCP_FEATURE_AM | UCP_FEATURE_WAKEUP));
    return t;
  }

  ~UcxStagedTransport() override {
    {
      std::lock_guard<std::mutex> lock(export_mu_);
      receivers_.clear();  // joins their threads
    }
    std::lock_guard<std::mutex> lock(send_mu_);
    for (auto& [id, peer] : peers_) peer->Close(/*force=*/true);
    peers_.clear();
    // Force-closed endpoints completed their requests (with errors).
    for (SendItem& item : items_) {
      if (item.request != nullptr) ucp_request_free(item.request);
    }
    items_.clear();  // drops the transfers' copy queues (drained first)
    send_region_.reset();
    send_staging_.reset();
    send_worker_.reset();
  }

  std::string_view name() const override { return kTransportUcxStaged; }

  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override {
    std::lock_guard<std::mutex> lock(export_mu_);
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<StagedReceiver> r,
                            StagedReceiver::Start(context_.get(), pool, options_, gate_));
    v1::KvPoolDescriptor d = DescribePool(pool, self, kTransportUcxStaged);
    d.set_endpoint(r->address());
    d.set_remote_key(EncodeStagedPoolInfo(r->info()));
    TANDEM_LOG(INFO) << "KV pool exported over staged UCX: " << r->info().slots << " staging slots of "
                     << (r->info().slot_bytes >> 10) << " KiB (" << (pool.on_device() ? "pinned" : "host")
                     << " memory)";
    receivers_.push_back(std::move(r));
    return d;
  }

  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override;

  void SetWriteGate(KvWriteGate* gate) override {
    std::lock_guard<std::mutex> lock(export_mu_);
    gate_ = gate;
  }

  void Disconnect(std::string_view worker_id) override {
    std::lock_guard<std::mutex> lock(send_mu_);
    auto it = peers_.find(std::string(worker_id));
    if (it == peers_.end()) return;
    it->second->Close(/*force=*/false);
    peers_.erase(it);
  }

 private:
  friend class StagedTransfer;
  explicit UcxStagedTransport(const StagedOptions& options) : options_(options) {}

  // With send_mu_ held from here on.
  absl::StatusOr<std::shared_ptr<StagedPeer>> ConnectLocked(const v1::KvPoolDescriptor& dest,
                                                            const StagedPoolInfo& info, absl::Time deadline);
  absl::Status EnsureSendSlotsLocked(KvPoolView& pool);
  // Advances every in-flight chunk: posts the AM of each whose copy into
  // its slot is done, frees the slot of each whose AM completed.
  void PumpLocked();
  // A free slot, pumping until one is; DEADLINE_EXCEEDED past `deadline`.
  absl::StatusOr<uint32_t> AcquireSlot(std::unique_lock<std::mutex>& lock, absl::Time deadline);
  char* SlotData(uint32_t slot) const { return send_staging_->data() + slot * send_slot_bytes_; }
  void DropPeerLocked(const std::shared_ptr<StagedPeer>& peer) {
    peer->Close(/*force=*/true);
    auto it = peers_.find(peer->worker_id);
    if (it != peers_.end() && it->second == peer) peers_.erase(it);
  }
  static ucs_status_t OnAck(void* arg, const void* header, size_t header_length, void*, size_t,
                            const ucp_am_recv_param_t*);

  const StagedOptions options_;
  UcxContext context_;

  std::mutex export_mu_;
  KvWriteGate* gate_ = nullptr;  // for the receivers ExportPool starts after it is set
  std::vector<std::unique_ptr<StagedReceiver>> receivers_;

  // Prefill side, all guarded by send_mu_ (the worker is SERIALIZED; the
  // ack handler runs inside its progress, so under the mutex too).
  std::mutex send_mu_;
  UcxWorker send_worker_;
  std::unordered_map<std::string, std::shared_ptr<StagedPeer>> peers_;
  std::unique_ptr<StagingBuffer> send_staging_;
  std::optional<UcxMemoryRegion> send_region_;
  uint64_t send_slot_bytes_ = 0;
  std::vector<uint32_t> free_slots_;
  std::list<SendItem> items_;
  std::unordered_map<std::string, std::weak_ptr<TxState>> awaiting_ack_;
};

ucs_status_t UcxStagedTransport::OnAck(void* arg, const void* header, size_t header_length, void*, size_t,
                                       const ucp_am_recv_param_t*) {
  auto* self = static_cast<UcxStagedTransport*>(arg);
  absl::StatusOr<StagedAckHeader> ack =
      DecodeStagedAck(std::string_view(static_cast<const char*>(header), header_length));
  if (!ack.ok()) {
    TANDEM_LOG(WARNING) << "dropping a staged KV acknowledgement: " << ack.status();
    return UCS_OK;
  }
  auto it = self->awaiting_ack_.find(ack->transfer_id);
  if (it == self->awaiting_ack_.end()) return UCS_OK;  // its transfer gave up
  if (std::shared_ptr<TxState> tx = it->second.lock()) tx->ack = std::move(*ack);
  return UCS_OK;
}

absl::StatusOr<std::shared_ptr<StagedPeer>> UcxStagedTransport::ConnectLocked(const v1::KvPoolDescriptor& dest,
                                                                              const StagedPoolInfo& info,
                                                                              absl::Time deadline) {
  if (send_worker_ == nullptr) {
    TANDEM_ASSIGN_OR_RETURN(UcxWorker worker, CreateUcxWorker(context_.get(), UCS_THREAD_MODE_SERIALIZED));
    ucp_am_handler_param_t p = {};
    p.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG |
                   UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    p.id = kStagedAckAm;
    p.cb = &OnAck;
    p.arg = this;
    p.flags = UCP_AM_FLAG_WHOLE_MSG;
    const ucs_status_t s = ucp_worker_set_am_recv_handler(worker.get(), &p);
    if (s != UCS_OK) return UcxError("ucp_worker_set_am_recv_handler", s);
    send_worker_ = std::move(worker);
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
  absl::StatusOr<UcxEndpoint> ep = UcxEndpoint::Connect(send_worker_.get(), dest.endpoint(), OnPeerError, peer.get());
  if (!ep.ok()) {
    return absl::Status(ep.status().code(),
                        absl::StrCat("connecting to decode worker ", dest.worker_id(), ": ", ep.status().message()));
  }
  peer->ep.emplace(std::move(*ep));
  // Complete the handshake before use (see ucx_transport.cc: closing an
  // endpoint mid-handshake trips UCX 1.13 when the peer's worker goes).
  ucp_request_param_t params = {};
  absl::Status connected = WaitForUcxRequest(send_worker_.get(), ucp_ep_flush_nbx(peer->ep->get(), &params),
                                             std::min(deadline, absl::Now() + kConnectTimeout),
                                             absl::StrCat("connecting to decode worker ", dest.worker_id()));
  if (!connected.ok()) {
    peer->failed = true;
    if (absl::IsDeadlineExceeded(connected) && absl::Now() <= deadline) {
      return absl::UnavailableError(absl::StrCat("decode worker ", dest.worker_id(), " did not answer within ",
                                                 absl::FormatDuration(kConnectTimeout)));
    }
    return connected;
  }
  peers_[dest.worker_id()] = peer;
  return peer;
}

absl::Status UcxStagedTransport::EnsureSendSlotsLocked(KvPoolView& pool) {
  const uint64_t block_bytes = static_cast<uint64_t>(pool.layout().block_bytes());
  if (send_staging_ != nullptr) return absl::OkStatus();
  const uint64_t slot_bytes = std::max<uint64_t>(options_.slot_bytes, 2 * block_bytes);
  TANDEM_ASSIGN_OR_RETURN(send_staging_, AllocateStaging(pool, slot_bytes * options_.slots));
  TANDEM_ASSIGN_OR_RETURN(UcxMemoryRegion region,
                          UcxMemoryRegion::Map(context_.get(), send_staging_->data(), send_staging_->size()));
  send_region_.emplace(std::move(region));
  send_slot_bytes_ = slot_bytes;
  for (uint32_t i = options_.slots; i > 0; --i) free_slots_.push_back(i - 1);
  return absl::OkStatus();
}

void UcxStagedTransport::PumpLocked() {
  if (send_worker_ != nullptr) {
    for (int i = 0; i < 8 && ucp_worker_progress(send_worker_.get()) != 0; ++i) {
    }
  }
  for (auto it = items_.begin(); it != items_.end();) {
    SendItem& item = *it;
    TxState& tx = *item.tx;
    bool done = false;
    if (!item.sending) {
      // The slot is written by the copy until its mark: never reuse or
      // send it before, failed transfer or not.
      absl::StatusOr<bool> copied = tx.queue->Reached(item.mark);
      if (copied.ok() && !*copied) {
        ++it;
        continue;
      }
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
      if (s != UCS_OK) tx.Fail(UcxError(absl::StrCat("KV transfer ", tx.id, ": sending a chunk"), s));
      done = true;
    }
    if (done) {
      free_slots_.push_back(item.slot);
      --tx.outstanding;
      it = items_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<uint32_t> UcxStagedTransport::AcquireSlot(std::unique_lock<std::mutex>& lock, absl::Time deadline) {
  int idle = 0;
  while (free_slots_.empty()) {
    PumpLocked();
    if (!free_slots_.empty()) break;
    if (absl::Now() > deadline) return absl::DeadlineExceededError("no staging slot freed before the deadline");
    lock.unlock();
    if (++idle > 200) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    } else {
      std::this_thread::yield();
    }
    lock.lock();
  }
  const uint32_t slot = free_slots_.back();
  free_slots_.pop_back();
  return slot;
}

absl::StatusOr<std::unique_ptr<KvTransfer>> UcxStagedTransport::StartTransfer(KvPoolView& pool,
                                                                              const KvEndpointInfo& self,
                                                                              const v1::KvPoolDescriptor& dest,
                                                                              KvTransferSpec spec) {
  if (dest.transport() != kTransportUcxStaged) {
    return absl::FailedPreconditionError(absl::StrCat("decode worker ", dest.worker_id(),
                                                      " exported its KV pool over '", dest.transport(),
                                                      "', not ucx_staged"));
  }
  TANDEM_ASSIGN_OR_RETURN(StagedPoolInfo info, DecodeStagedPoolInfo(dest.remote_key(), dest.worker_id()));
  TANDEM_RETURN_IF_ERROR(CheckTransfer(self, pool, dest, spec));
  if (absl::Now() > spec.deadline) {
    auto late = std::make_unique<StagedTransfer>(*this, nullptr, pool, dest, std::move(spec),
                                                 std::vector<StagingChunk>());
    late->MarkLate();
    return std::unique_ptr<KvTransfer>(std::move(late));
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CopyQueue> queue, MakeCopyQueue(pool));
  std::lock_guard<std::mutex> lock(send_mu_);
  TANDEM_RETURN_IF_ERROR(EnsureSendSlotsLocked(pool));
  const uint64_t block_bytes = static_cast<uint64_t>(pool.layout().block_bytes());
  const int32_t per_chunk = StagedBlocksPerChunk(send_slot_bytes_, info.slot_bytes, block_bytes);
  if (per_chunk <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("a KV block (", 2 * block_bytes, " bytes K+V) does not fit the "
                                                      "staging slots (", send_slot_bytes_, " here, ", info.slot_bytes,
                                                      " at decode worker ", dest.worker_id(), ")"));
  }
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<StagedPeer> peer, ConnectLocked(dest, info, spec.deadline));
  auto tx = std::make_shared<TxState>();
  tx->id = spec.transfer_id;
  tx->peer = std::move(peer);
  tx->queue = std::move(queue);
  awaiting_ack_[tx->id] = tx;
  std::vector<StagingChunk> chunks = PlanStagingChunks(PlanBlockRuns(spec.src_blocks, spec.dst_blocks), per_chunk);
  return std::unique_ptr<KvTransfer>(
      new StagedTransfer(*this, std::move(tx), pool, dest, std::move(spec), std::move(chunks)));
}

StagedTransfer::~StagedTransfer() {
  if (tx_ == nullptr) return;
  // Let in-flight chunks go out (briefly) so the decode side is not left
  // with half a layer; what remains is finished by later pumps.
  if (!result_.has_value() && tx_->outstanding > 0) {
    FinishBy(std::min(spec_.deadline, absl::Now() + absl::Seconds(2))).IgnoreError();
  }
  std::lock_guard<std::mutex> lock(transport_.send_mu_);
  if (finish_request_ != nullptr) ucp_request_free(finish_request_);
  transport_.awaiting_ack_.erase(tx_->id);
  tx_.reset();
}

absl::Status StagedTransfer::Fail(absl::Status s) {
  if (tx_ != nullptr) {
    std::lock_guard<std::mutex> lock(transport_.send_mu_);
    tx_->Fail(s);
    // No later transfer reuses an endpoint with chunks of unknown fate;
    // the force-close also cancels this transfer's sends in flight.
    transport_.DropPeerLocked(tx_->peer);
  }
  result_ = s;
  return s;
}

absl::Status StagedTransfer::SendLayer(int layer) {
  if (result_.has_value()) {
    return result_->ok() ? absl::FailedPreconditionError(absl::StrCat(Describe(), ": SendLayer after Finish"))
                         : *result_;
  }
  if (layer < 0 || layer >= dest_.key_base_size()) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), ": layer ", layer, " out of range"));
  }
  const uint64_t block_bytes = dest_.block_stride();
  absl::Status status;
  {
    std::unique_lock<std::mutex> lock(transport_.send_mu_);
    for (uint32_t c = 0; c < chunks_.size() && status.ok(); ++c) {
      if (!tx_->status.ok()) {
        status = tx_->status;
        break;
      }
      absl::StatusOr<uint32_t> slot = transport_.AcquireSlot(lock, spec_.deadline);
      if (!slot.ok()) {
        status = absl::Status(slot.status().code(), absl::StrCat(Describe(), ": ", slot.status().message()));
        break;
      }
      const StagingChunk& chunk = chunks_[c];
      char* k = transport_.SlotData(*slot);
      char* v = k + chunk.blocks * block_bytes;
      for (const BlockRun& r : chunk.runs) {
        const size_t bytes = static_cast<size_t>(r.count) * block_bytes;
        if (status.ok()) status = tx_->queue->Copy(k, src_.KeyBlock(layer, r.src), bytes);
        if (status.ok()) status = tx_->queue->Copy(v, src_.ValueBlock(layer, r.src), bytes);
        k += bytes;
        v += bytes;
      }
      absl::StatusOr<uint64_t> mark = status.ok() ? tx_->queue->Mark() : absl::StatusOr<uint64_t>(status);
      if (!mark.ok()) {
        // The slot may hold a partial copy: it rejoins the free list only
        // once the queue is drained.
        tx_->queue->Drain().IgnoreError();
        transport_.free_slots_.push_back(*slot);
        status = mark.status();
        break;
      }
      SendItem item;
      item.tx = tx_;
      item.slot = *slot;
      item.mark = *mark;
      item.header = EncodeStagedChunk({spec_.transfer_id, layer, static_cast<int32_t>(c), chunk.runs});
      item.length = 2 * static_cast<uint64_t>(chunk.blocks) * block_bytes;
      transport_.items_.push_back(std::move(item));
      ++tx_->outstanding;
      ++chunks_sent_;
      bytes_ += static_cast<int64_t>(2 * static_cast<uint64_t>(chunk.blocks) * block_bytes);
    }
    if (status.ok()) transport_.PumpLocked();
  }
  if (!status.ok()) return Fail(status);
  return absl::OkStatus();
}

absl::Status StagedTransfer::FinishBy(absl::Time deadline) {
  if (result_.has_value()) return *result_;
  int rounds = 0;
  auto backoff = [&rounds] {
    if (++rounds > 200) {
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    } else {
      std::this_thread::yield();
    }
  };
  auto missed = [&] { return Fail(absl::DeadlineExceededError(absl::StrCat(Describe(), " missed its deadline"))); };
  // 1. Every chunk's AM completed: the decode side has received its data.
  for (;;) {
    absl::Status failed;
    {
      std::lock_guard<std::mutex> lock(transport_.send_mu_);
      transport_.PumpLocked();
      if (!tx_->status.ok()) {
        failed = tx_->status;
      } else if (tx_->outstanding == 0) {
        break;
      }
    }
    if (!failed.ok()) return Fail(failed);
    if (absl::Now() > deadline) return missed();
    backoff();
  }
  // 2. FINISH with the chunk count, on which the decode side answers once
  // every chunk is copied into its pool.
  absl::Status sent;
  {
    std::lock_guard<std::mutex> lock(transport_.send_mu_);
    if (!tx_->peer->usable()) {
      sent = absl::UnavailableError(absl::StrCat(Describe(), ": the connection is gone"));
    } else {
      finish_header_ = EncodeStagedFinish({spec_.transfer_id, chunks_sent_});
      ucp_request_param_t p = {};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
      ucs_status_ptr_t r = ucp_am_send_nbx(tx_->peer->ep->get(), kStagedFinishAm, finish_header_.data(),
                                           finish_header_.size(), nullptr, 0, &p);
      if (UCS_PTR_IS_ERR(r)) {
        sent = UcxError(absl::StrCat(Describe(), ": sending FINISH"), UCS_PTR_STATUS(r));
      } else {
        finish_request_ = r;
      }
    }
  }
  if (!sent.ok()) return Fail(sent);
  // 3. The acknowledgement.
  for (;;) {
    std::optional<StagedAckHeader> ack;
    absl::Status failed;
    {
      std::lock_guard<std::mutex> lock(transport_.send_mu_);
      transport_.PumpLocked();
      if (finish_request_ != nullptr) {
        const ucs_status_t s = ucp_request_check_status(finish_request_);
        if (s != UCS_INPROGRESS) {
          ucp_request_free(finish_request_);
          finish_request_ = nullptr;
          if (s != UCS_OK) failed = UcxError(absl::StrCat(Describe(), ": sending FINISH"), s);
        }
      }
      if (tx_->ack.has_value()) {
        ack = tx_->ack;
      } else if (failed.ok() && !tx_->peer->usable()) {
        failed = absl::UnavailableError(absl::StrCat(Describe(), ": the connection is gone"));
      }
    }
    if (ack.has_value()) {
      if (ack->code == 0) break;
      // The decode side refused the data; the connection itself is fine.
      result_ = absl::Status(static_cast<absl::StatusCode>(ack->code),
                             absl::StrCat(Describe(), ": the decode worker reports: ", ack->message));
      return *result_;
    }
    if (!failed.ok()) return Fail(failed);
    if (absl::Now() > deadline) return missed();
    backoff();
  }
  result_ = absl::OkStatus();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransport>> MakeUcxStagedTransport(const StagedOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<UcxStagedTransport> t, UcxStagedTransport::Create(options));
  return std::unique_ptr<KvTransport>(std::move(t));
}

}  // namespace tandem
