#include "common/transport/ucx_staged_transport.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/transport/block_runs.h"
#include "common/transport/transfer_checks.h"
#include "common/transport/transport_selection.h"
#include "common/transport/ucx_handles.h"
#include "common/transport/ucx_staged_protocol.h"
#include "common/transport/ucx_staged_sender.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Between polling rounds of a transfer's own waits (the send mutex
// released): yield at first, a chunk or an ACK is usually microseconds
// away, then 20 us sleeps.
void Backoff(int& rounds) {
  if (++rounds > 200) {
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  } else {
    std::this_thread::yield();
  }
}

class StagedTransfer final : public KvTransfer {
 public:
  StagedTransfer(StagedSender& sender, std::shared_ptr<StagedTxState> tx, KvPoolView& src,
                 v1::KvPoolDescriptor dest, KvTransferSpec spec, std::vector<StagingChunk> chunks)
      : sender_(sender),
        tx_(std::move(tx)),
        src_(src),
        dest_(std::move(dest)),
        spec_(std::move(spec)),
        chunks_(std::move(chunks)) {}
  ~StagedTransfer() override;

  absl::Status SendLayer(int layer) override;
  absl::Status Finish() override;
  int64_t bytes_sent() const override { return bytes_; }
  const std::string& id() const override { return spec_.transfer_id; }
  std::string_view transport() const override { return kTransportUcxStaged; }
  void MarkLate() { result_ = MissedDeadline(Describe()); }

 private:
  // Waits for the chunks and the decode side's ACK until `until`; past it
  // the transfer fails with FinishExpired (UNAVAILABLE when `by_timeout`,
  // the finish timeout being the bound, else DEADLINE_EXCEEDED).
  absl::Status FinishBy(absl::Time until, bool by_timeout);
  // FINISH with the chunk count, then the decode side's acknowledgement
  // (every chunk copied into its pool, or why not), by `until`.
  absl::StatusOr<StagedAckHeader> FinishAndAwaitAck(absl::Time until);
  // After a refusal (StagedTxState::refused): the decode side's reason, or
  // `failure` when none comes in time.
  absl::Status FetchRefusal(absl::Status failure);
  bool Refused() {
    std::lock_guard<std::mutex> lock(sender_.mu());
    return tx_->refused;
  }
  absl::Status Fail(absl::Status s);
  std::string Describe() const {
    return absl::StrCat("KV transfer ", spec_.transfer_id, " to decode worker ", dest_.worker_id(), " (staged UCX)");
  }

  StagedSender& sender_;
  std::shared_ptr<StagedTxState> tx_;  // null only for a transfer born late
  KvPoolView& src_;
  v1::KvPoolDescriptor dest_;
  KvTransferSpec spec_;
  std::vector<StagingChunk> chunks_;  // one layer's chunks (the same for every layer)
  uint32_t chunks_sent_ = 0;
  int64_t bytes_ = 0;
  std::string finish_header_;
  ucs_status_ptr_t finish_request_ = nullptr;  // guarded by the send mutex
  std::optional<absl::Status> result_;
  bool refusal_fetched_ = false;
};

// How long Finish waits for the decode side's reason after a refusal.
constexpr absl::Duration kRefusalReasonWait = absl::Seconds(1);

class UcxStagedTransport final : public KvTransport, private KvReceiver {
 public:
  static absl::StatusOr<std::unique_ptr<UcxStagedTransport>> Create(const StagedOptions& options) {
    std::unique_ptr<UcxStagedTransport> t(new UcxStagedTransport(options));
    TANDEM_ASSIGN_OR_RETURN(t->context_, CreateUcxContext(UCP_FEATURE_AM | UCP_FEATURE_WAKEUP));
    t->sender_ = std::make_unique<StagedSender>(t->context_.get(), options);
    return t;
  }

  ~UcxStagedTransport() override {
    {
      std::lock_guard<std::mutex> lock(export_mu_);
      receivers_.clear();  // joins their threads
    }
    sender_.reset();  // joins its progress thread, then closes its connections
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

  void Disconnect(std::string_view worker_id) override {
    std::lock_guard<std::mutex> lock(sender_->mu());
    sender_->DisconnectLocked(std::string(worker_id));
  }

  // Decode side: itself. The receivers' threads write the pool, so they
  // pass the gate; nothing is announced (the chunks say what they are),
  // and nothing is left to wait for once the sender's Finish has the ACK.
  KvReceiver* receiver() override { return this; }

 private:
  // KvReceiver.
  void SetWriteGate(KvWriteGate* gate) override {
    std::lock_guard<std::mutex> lock(export_mu_);
    gate_ = gate;
  }
  absl::Status AcceptAnnouncedTransfer(const v1::NcclTransferRequest&, const std::vector<int32_t>&,
                                       ReceiveFailed) override {
    return NoAnnouncedTransfers(name());
  }
  absl::Status WaitReceived(std::string_view, std::string_view, absl::Time) override { return absl::OkStatus(); }

  explicit UcxStagedTransport(const StagedOptions& options) : options_(options) {}

  const StagedOptions options_;
  UcxContext context_;

  std::mutex export_mu_;
  KvWriteGate* gate_ = nullptr;  // for the receivers ExportPool starts after it is set
  std::vector<std::unique_ptr<StagedReceiver>> receivers_;

  // Prefill side (ucx_staged_sender.h has its threads and its lock).
  std::unique_ptr<StagedSender> sender_;
};

absl::StatusOr<std::unique_ptr<KvTransfer>> UcxStagedTransport::StartTransfer(KvPoolView& pool,
                                                                              const KvEndpointInfo& self,
                                                                              const v1::KvPoolDescriptor& dest,
                                                                              KvTransferSpec spec) {
  TANDEM_RETURN_IF_ERROR(CheckDescriptorTransport(dest, kTransportUcxStaged));
  TANDEM_ASSIGN_OR_RETURN(StagedPoolInfo info, DecodeStagedPoolInfo(dest.remote_key(), dest.worker_id()));
  TANDEM_RETURN_IF_ERROR(CheckTransfer(self, pool, dest, spec));
  if (PastDeadline(spec)) {
    auto late = std::make_unique<StagedTransfer>(*sender_, nullptr, pool, dest, std::move(spec),
                                                 std::vector<StagingChunk>());
    late->MarkLate();
    return std::unique_ptr<KvTransfer>(std::move(late));
  }
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CopyQueue> queue, MakeCopyQueue(pool));
  std::lock_guard<std::mutex> lock(sender_->mu());
  TANDEM_RETURN_IF_ERROR(sender_->EnsureSlotsLocked(pool));
  const uint64_t block_bytes = static_cast<uint64_t>(pool.layout().block_bytes());
  const uint64_t slot_bytes = sender_->slot_bytes();
  const int32_t per_chunk = StagedBlocksPerChunk(slot_bytes, info.slot_bytes, block_bytes);
  if (per_chunk <= 0) {
    return absl::FailedPreconditionError(absl::StrCat("a KV block (", 2 * block_bytes, " bytes K+V) does not fit the "
                                                      "staging slots (", slot_bytes, " here, ", info.slot_bytes,
                                                      " at decode worker ", dest.worker_id(), ")"));
  }
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<StagedPeer> peer, sender_->ConnectLocked(dest, info, spec.deadline));
  auto tx = std::make_shared<StagedTxState>();
  tx->id = spec.transfer_id;
  tx->peer = std::move(peer);
  tx->queue = std::move(queue);
  sender_->ExpectAckLocked(tx);
  std::vector<StagingChunk> chunks = PlanStagingChunks(PlanBlockRuns(spec.src_blocks, spec.dst_blocks), per_chunk);
  return std::unique_ptr<KvTransfer>(
      new StagedTransfer(*sender_, std::move(tx), pool, dest, std::move(spec), std::move(chunks)));
}

StagedTransfer::~StagedTransfer() {
  if (tx_ == nullptr) return;
  // Let in-flight chunks go out (briefly) so the decode side is not left
  // with half a layer; what remains the progress thread finishes.
  bool in_flight = false;
  {
    std::lock_guard<std::mutex> lock(sender_.mu());
    in_flight = tx_->outstanding > 0;  // the progress thread counts it down
  }
  if (!result_.has_value() && in_flight) {
    FinishBy(std::min(spec_.deadline, absl::Now() + absl::Seconds(2)), /*by_timeout=*/false).IgnoreError();
  }
  std::lock_guard<std::mutex> lock(sender_.mu());
  // A refusal whose reason nobody fetched may leave chunks in flight on
  // the endpoint: no later transfer reuses it.
  if (tx_->refused && !refusal_fetched_) sender_.DropPeerLocked(tx_->peer);
  if (finish_request_ != nullptr) ucp_request_free(finish_request_);
  sender_.ForgetLocked(tx_->id);
  tx_.reset();
}

absl::Status StagedTransfer::Fail(absl::Status s) {
  if (tx_ != nullptr) {
    std::lock_guard<std::mutex> lock(sender_.mu());
    tx_->Fail(s);
    // No later transfer reuses an endpoint with chunks of unknown fate;
    // the force-close also cancels this transfer's sends in flight. A
    // refusal keeps the endpoint: Finish asks it for the reason.
    if (!tx_->refused) sender_.DropPeerLocked(tx_->peer);
  }
  result_ = s;
  return s;
}

absl::Status StagedTransfer::SendLayer(int layer) {
  TANDEM_RETURN_IF_ERROR(CheckStillSending(Describe(), result_));
  TANDEM_RETURN_IF_ERROR(CheckLayer(Describe(), layer, dest_.key_base_size()));
  // No deadline check of its own here: a chunk past it is turned away by
  // the decode side's write gate (its reservation is gone), which keeps the
  // shared connection, where failing here would drop it (Fail); the slot
  // wait below is bounded by the deadline.
  const uint64_t block_bytes = dest_.block_stride();
  absl::Status status;
  {
    std::unique_lock<std::mutex> lock(sender_.mu());
    for (uint32_t c = 0; c < chunks_.size() && status.ok(); ++c) {
      if (!tx_->status.ok()) {
        status = tx_->status;
        break;
      }
      absl::StatusOr<uint32_t> slot = sender_.AcquireSlot(lock, spec_.deadline);
      if (!slot.ok()) {
        status = absl::Status(slot.status().code(), absl::StrCat(Describe(), ": ", slot.status().message()));
        break;
      }
      const StagingChunk& chunk = chunks_[c];
      char* k = sender_.SlotData(*slot);
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
        sender_.ReleaseSlotLocked(*slot);
        status = mark.status();
        break;
      }
      StagedSendItem item;
      item.tx = tx_;
      item.slot = *slot;
      item.mark = *mark;
      item.header = EncodeStagedChunk({spec_.transfer_id, layer, static_cast<int32_t>(c), chunk.runs});
      item.length = 2 * static_cast<uint64_t>(chunk.blocks) * block_bytes;
      sender_.EnqueueLocked(std::move(item));
      ++chunks_sent_;
      bytes_ += static_cast<int64_t>(2 * static_cast<uint64_t>(chunk.blocks) * block_bytes);
    }
    if (status.ok()) sender_.PumpLocked();
  }
  if (!status.ok()) return Fail(status);
  return absl::OkStatus();
}

absl::Status StagedTransfer::FinishBy(absl::Time until, bool by_timeout) {
  if (result_.has_value()) return *result_;
  int rounds = 0;
  // Past `until`: Fail force-closes the connection, which cancels this
  // transfer's sends still in flight (a peer that stopped acknowledging is
  // not waited for any longer).
  auto missed = [&] { return Fail(FinishExpired(spec_, by_timeout, Describe())); };
  // 1. Every chunk's AM completed: the decode side has received its data.
  for (;;) {
    absl::Status failed;
    {
      std::lock_guard<std::mutex> lock(sender_.mu());
      sender_.PumpLocked();
      if (!tx_->status.ok()) {
        failed = tx_->status;
      } else if (tx_->outstanding == 0) {
        break;
      }
    }
    if (!failed.ok()) {
      const bool refused = Refused();
      Fail(failed).IgnoreError();  // keeps the endpoint after a refusal
      if (refused && !refusal_fetched_) return FetchRefusal(failed);
      return *result_;
    }
    if (absl::Now() > until) return missed();
    Backoff(rounds);
  }
  // 2. FINISH and its acknowledgement.
  absl::StatusOr<StagedAckHeader> ack = FinishAndAwaitAck(until);
  // The wait ran out (a UCX timeout of its own stays what it is).
  if (absl::IsDeadlineExceeded(ack.status()) && absl::Now() > until) return missed();
  if (!ack.ok()) return Fail(ack.status());
  if (ack->code != 0) {
    // The decode side refused the data; the connection itself is fine.
    result_ = absl::Status(static_cast<absl::StatusCode>(ack->code),
                           absl::StrCat(Describe(), ": the decode worker reports: ", ack->message));
    return *result_;
  }
  result_ = absl::OkStatus();
  return absl::OkStatus();
}

absl::StatusOr<StagedAckHeader> StagedTransfer::FinishAndAwaitAck(absl::Time until) {
  int rounds = 0;
  // FINISH carries the chunk count; the decode side answers once every
  // chunk is copied into its pool (or the transfer failed there).
  {
    std::lock_guard<std::mutex> lock(sender_.mu());
    if (!tx_->peer->usable()) return absl::UnavailableError(absl::StrCat(Describe(), ": the connection is gone"));
    finish_header_ = EncodeStagedFinish({spec_.transfer_id, chunks_sent_});
    ucp_request_param_t p = {};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t r = ucp_am_send_nbx(tx_->peer->ep->get(), kStagedFinishAm, finish_header_.data(),
                                         finish_header_.size(), nullptr, 0, &p);
    if (UCS_PTR_IS_ERR(r)) return UcxError(absl::StrCat(Describe(), ": sending FINISH"), UCS_PTR_STATUS(r));
    finish_request_ = r;
    sender_.NoteFinishSentLocked(*tx_);
  }
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(sender_.mu());
      sender_.PumpLocked();
      if (finish_request_ != nullptr) {
        const ucs_status_t s = ucp_request_check_status(finish_request_);
        if (s != UCS_INPROGRESS) {
          ucp_request_free(finish_request_);
          finish_request_ = nullptr;
          if (s != UCS_OK) return UcxError(absl::StrCat(Describe(), ": sending FINISH"), s);
        }
      }
      if (tx_->ack.has_value()) return *tx_->ack;
      if (!tx_->peer->usable()) return absl::UnavailableError(absl::StrCat(Describe(), ": the connection is gone"));
    }
    if (absl::Now() > until) return MissedDeadline(Describe());
    Backoff(rounds);
  }
}

absl::Status StagedTransfer::Finish() {
  if (result_.has_value() && !result_->ok() && tx_ != nullptr && !refusal_fetched_ && Refused()) {
    return FetchRefusal(*result_);
  }
  bool by_timeout = false;
  const absl::Time until = FinishDeadline(spec_, absl::Now(), &by_timeout);
  return FinishBy(until, by_timeout);
}

absl::Status StagedTransfer::FetchRefusal(absl::Status failure) {
  refusal_fetched_ = true;
  const absl::Time until = std::min(spec_.deadline, absl::Now() + kRefusalReasonWait);
  // The transfer's other chunks end first (turned away too, or landed):
  // the decode side acknowledges only once nothing of it is in flight.
  absl::Status ended;
  for (int rounds = 0;;) {
    {
      std::lock_guard<std::mutex> lock(sender_.mu());
      sender_.PumpLocked();
      if (tx_->outstanding == 0) break;
      if (!tx_->peer->usable()) {
        ended = absl::UnavailableError("the connection is gone");
        break;
      }
    }
    if (absl::Now() > until) {
      ended = absl::DeadlineExceededError("chunks still in flight");
      break;
    }
    Backoff(rounds);
  }
  absl::StatusOr<StagedAckHeader> ack =
      ended.ok() ? FinishAndAwaitAck(until) : absl::StatusOr<StagedAckHeader>(ended);
  if (ack.ok() && ack->code != 0) {
    result_ = absl::Status(static_cast<absl::StatusCode>(ack->code),
                           absl::StrCat(Describe(), ": the decode worker reports: ", ack->message));
    return *result_;
  }
  // No reason came: the endpoint's state is unknown, so nothing reuses it.
  {
    std::lock_guard<std::mutex> lock(sender_.mu());
    sender_.DropPeerLocked(tx_->peer);
  }
  result_ = std::move(failure);
  return *result_;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransport>> MakeUcxStagedTransport(const StagedOptions& options) {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<UcxStagedTransport> t, UcxStagedTransport::Create(options));
  return std::unique_ptr<KvTransport>(std::move(t));
}

}  // namespace tandem
