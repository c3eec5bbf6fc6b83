#include "common/transport/nccl_transport.h"

#include <unistd.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/transport/host_id.h"
#include "common/transport/nccl_protocol.h"
#include "common/transport/nccl_receiver.h"
#include "common/transport/transfer_checks.h"
#include "common/transport/transport_selection.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

class NcclTransport;
class NcclTransfer;

// Polls `done` (a check that may fail) and the communicator until `until`.
// One place for the wait loop of communicator creation and of Finish.
template <typename Done>
absl::Status PollUntil(absl::Time until, std::string_view what, Done done) {
  int rounds = 0;
  for (;;) {
    absl::StatusOr<bool> d = done();
    if (!d.ok()) return d.status();
    if (*d) return absl::OkStatus();
    if (absl::Now() > until) return MissedDeadline(what);
    if (++rounds > 200) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else {
      std::this_thread::yield();
    }
  }
}

// The prefill side of one pair: communicator (rank 0), stream, and the
// queue of transfers not yet fully issued. Everything under mu.
struct SendPeer {
  SendPeer(std::shared_ptr<NcclOps> o, std::string id) : ops(std::move(o)), worker_id(std::move(id)) {}
  ~SendPeer() {
    if (comm != nullptr) ops->CommDestroy(comm);
    if (stream != nullptr) ops->DestroyStream(device, stream);
  }
  // Aborts the communicator (ends whatever is in flight) and marks the
  // pair dead: every transfer of it fails, the transport makes a new one.
  void Abort(const absl::Status& why) {
    if (!broken.ok()) return;
    broken = why;
    if (comm != nullptr) ops->CommAbort(comm);
    comm = nullptr;
  }

  const std::shared_ptr<NcclOps> ops;
  const std::string worker_id;
  std::mutex mu;
  NcclExport exported;
  uint64_t comm_id = 0;
  NcclCommHandle comm = nullptr;
  GpuStreamHandle stream = nullptr;
  int device = 0;
  absl::Status broken;  // not OK once aborted
  std::deque<NcclTransfer*> queue;
};

class NcclTransfer final : public KvTransfer {
 public:
  NcclTransfer(NcclTransport& transport, KvPoolView& src, std::shared_ptr<SendPeer> peer, v1::KvPoolDescriptor dest,
               KvTransferSpec spec, NcclPlan plan)
      : transport_(transport), src_(src), peer_(std::move(peer)), dest_(std::move(dest)), spec_(std::move(spec)),
        plan_(std::move(plan)), ready_(dest_.key_base_size(), false) {}
  ~NcclTransfer() override;

  absl::Status Init(size_t staging_bytes);
  absl::Status SendLayer(int layer) override;
  absl::Status Finish() override;
  int64_t bytes_sent() const override { return bytes_; }
  const std::string& id() const override { return spec_.transfer_id; }
  std::string_view transport() const override { return kTransportNccl; }

  // Under peer_->mu: issues ready layers in order; true once all are.
  absl::Status IssueReady();
  bool fully_issued() const { return next_ == static_cast<int>(ready_.size()); }
  std::string Describe() const {
    return absl::StrCat("KV transfer ", spec_.transfer_id, " to decode worker ", dest_.worker_id(), " (NCCL)");
  }

 private:
  absl::Status IssueLayer(int layer);
  absl::Status Fail(absl::Status s);

  NcclTransport& transport_;
  KvPoolView& src_;
  const std::shared_ptr<SendPeer> peer_;
  const v1::KvPoolDescriptor dest_;
  const KvTransferSpec spec_;
  const NcclPlan plan_;
  std::vector<bool> ready_;
  int next_ = 0;  // first layer not issued
  bool queued_ = false;
  void* staging_ = nullptr;
  GpuEventHandle done_ = nullptr;
  int64_t bytes_ = 0;
  std::optional<absl::Status> result_;
};

class NcclTransport final : public KvTransport, public NcclTransportStats, private KvReceiver {
 public:
  NcclTransport(std::shared_ptr<NcclOps> ops, std::unique_ptr<NcclControl> control, NcclTransportOptions options)
      : ops_(std::move(ops)), control_(std::move(control)), options_(std::move(options)) {
    if (options_.host_id.empty()) options_.host_id = LocalHostId();
  }

  std::string_view name() const override { return kTransportNccl; }

  // Decode side: itself, over the NcclReceiver ExportPool makes.
  KvReceiver* receiver() override { return this; }

  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override {
    if (options_.require_device_pools && !pool.on_device()) {
      return absl::FailedPreconditionError("the NCCL KV transport moves GPU memory only; this KV pool is in host memory");
    }
    TANDEM_RETURN_IF_ERROR(CheckExportablePool(pool, kTransportNccl));
    TANDEM_ASSIGN_OR_RETURN(int device, ops_->DeviceOf(pool.KeyBlock(0, 0)));
    NcclExport e;
    e.control_address = self.worker_id;  // the decode worker's id is its gRPC address
    TANDEM_ASSIGN_OR_RETURN(e.pci_bus_id, ops_->PciBusId(device));
    e.pid = static_cast<uint64_t>(getpid());
    v1::KvPoolDescriptor d = DescribePool(pool, self, kTransportNccl);
    d.set_endpoint(options_.host_id);
    d.set_remote_key(EncodeNcclExport(e));
    {
      std::lock_guard<std::mutex> lock(mu_);
      receiver_ = std::make_unique<NcclReceiver>(ops_, pool, device, options_, gate_);
    }
    TANDEM_LOG(INFO) << "KV pool exported over NCCL: GPU " << device << " (PCI " << e.pci_bus_id << ")";
    return d;
  }

  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override {
    TANDEM_RETURN_IF_ERROR(CheckDescriptorTransport(dest, kTransportNccl));
    TANDEM_ASSIGN_OR_RETURN(NcclExport e, DecodeNcclExport(dest.remote_key(), dest.worker_id()));
    if (options_.require_device_pools && !pool.on_device()) {
      return absl::FailedPreconditionError("the NCCL KV transport moves GPU memory only; this prefill worker's KV "
                                           "pool is in host memory");
    }
    TANDEM_RETURN_IF_ERROR(CheckTransfer(self, pool, dest, spec));
    TANDEM_RETURN_IF_ERROR(CheckTransferDeadline(spec));
    TANDEM_ASSIGN_OR_RETURN(int device, ops_->DeviceOf(pool.KeyBlock(0, 0)));
    NcclPlan plan = PlanNcclTransfer(spec.src_blocks, spec.dst_blocks, options_.max_direct_runs);
    const size_t staging = plan.staged ? static_cast<size_t>(2 * plan.blocks) * dest.block_stride() : 0;

    // A peer dropped (aborted) between the lookup and the lock is retried:
    // the map holds a fresh one by then.
    std::shared_ptr<SendPeer> peer;
    std::unique_lock<std::mutex> lock;
    for (;;) {
      peer = PeerFor(dest.worker_id());
      lock = std::unique_lock<std::mutex>(peer->mu);
      if (peer->broken.ok()) break;
      lock.unlock();
    }
    const bool fresh = peer->comm == nullptr;
    v1::NcclTransferRequest req;
    req.set_transfer_id(spec.transfer_id);
    req.set_prefill_worker_id(self.worker_id);
    req.set_num_layers(dest.key_base_size());
    req.set_block_stride(dest.block_stride());
    SetNcclPlan(plan, &req);
    req.set_timeout_seconds(
        std::max(1e-3, absl::ToDoubleSeconds(std::min(spec.deadline - absl::Now(), options_.max_receive_timeout))));
    if (fresh) {
      peer->exported = e;
      peer->device = device;
      std::random_device rd;
      peer->comm_id = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
      TANDEM_ASSIGN_OR_RETURN(std::string uid, ops_->GetUniqueId());
      req.set_unique_id(uid);
    }
    req.set_comm_id(peer->comm_id);
    const absl::Time control_deadline = std::min(spec.deadline, absl::Now() + absl::Seconds(10));
    absl::Status sent = control_->Send(e.control_address, req, control_deadline);
    if (!sent.ok()) {
      Drop(peer, absl::UnavailableError(sent.message()));
      return absl::UnavailableError(absl::StrCat("KV transfer ", spec.transfer_id, ": decode worker ", dest.worker_id(),
                                                 " did not take the NCCL transfer: ", sent.message()));
    }
    if (fresh) {
      absl::Status made = Connect(*peer, req.unique_id(), std::min(spec.deadline, absl::Now() + options_.init_timeout));
      if (!made.ok()) {
        Drop(peer, made);
        return made;
      }
    }
    auto t = std::make_unique<NcclTransfer>(*this, pool, peer, dest, std::move(spec), std::move(plan));
    absl::Status init = t->Init(staging);
    if (!init.ok()) {
      // The decode side posted receives that will never be matched.
      Drop(peer, init);
      return init;
    }
    peer->queue.push_back(t.get());
    return std::unique_ptr<KvTransfer>(std::move(t));
  }

  void Disconnect(std::string_view worker_id) override {
    std::shared_ptr<SendPeer> dropped;  // destroyed (ncclCommDestroy) once its transfers are gone
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(std::string(worker_id));
    if (it == peers_.end()) return;
    dropped = std::move(it->second);
    peers_.erase(it);
  }

  size_t send_peers() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return peers_.size();
  }
  size_t receive_pairs() const override {
    NcclReceiver* r = exported_receiver();
    return r == nullptr ? 0 : r->live_pairs();
  }

  // Aborts `peer`'s communicator and forgets it (if still the cached one).
  // Caller holds peer->mu.
  void Drop(const std::shared_ptr<SendPeer>& peer, const absl::Status& why) {
    TANDEM_LOG(WARNING) << "NCCL communicator with decode worker " << peer->worker_id << " aborted: " << why;
    peer->Abort(why);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(peer->worker_id);
    if (it != peers_.end() && it->second == peer) peers_.erase(it);
  }

  NcclOps& ops() { return *ops_; }

 private:
  // KvReceiver (decode side).
  void SetWriteGate(KvWriteGate* gate) override {
    std::lock_guard<std::mutex> lock(mu_);
    gate_ = gate;
  }
  absl::Status AcceptAnnouncedTransfer(const v1::NcclTransferRequest& req, const std::vector<int32_t>& writable,
                                       ReceiveFailed on_failed) override {
    NcclReceiver* r = exported_receiver();
    if (r == nullptr) return absl::FailedPreconditionError("this worker exported no KV pool over NCCL");
    return r->Accept(req, writable, std::move(on_failed));
  }
  absl::Status WaitReceived(std::string_view transfer_id, std::string_view completion, absl::Time deadline) override {
    NcclReceiver* r = exported_receiver();
    return r == nullptr ? absl::OkStatus() : r->WaitReceived(transfer_id, deadline);
  }

  NcclReceiver* exported_receiver() const {
    std::lock_guard<std::mutex> lock(mu_);
    return receiver_.get();
  }

  std::shared_ptr<SendPeer> PeerFor(const std::string& worker_id) {
    std::lock_guard<std::mutex> lock(mu_);
    std::shared_ptr<SendPeer>& p = peers_[worker_id];
    if (p == nullptr) p = std::make_shared<SendPeer>(ops_, worker_id);
    return p;
  }

  // ncclCommInitRank as rank 0; the decode side joins from its pair thread.
  absl::Status Connect(SendPeer& peer, const std::string& uid, absl::Time until) {
    TANDEM_ASSIGN_OR_RETURN(peer.stream, ops_->CreateStream(peer.device));
    TANDEM_ASSIGN_OR_RETURN(peer.comm, ops_->CommInitRank(uid, 2, 0, peer.device));
    const std::string what = absl::StrCat("NCCL communicator with decode worker ", peer.worker_id);
    absl::Status s = PollUntil(until, what, [&]() -> absl::StatusOr<bool> {
      absl::Status err;
      switch (ops_->CommState(peer.comm, &err)) {
        case NcclCommState::kReady: return true;
        case NcclCommState::kInProgress: return false;
        case NcclCommState::kFailed: return absl::UnavailableError(absl::StrCat(what, ": ", err.message()));
      }
      return false;
    });
    if (s.ok()) {
      TANDEM_LOG(INFO) << what << " ready (GPU " << peer.device << " -> PCI " << peer.exported.pci_bus_id << ")";
    }
    return s;
  }

  const std::shared_ptr<NcclOps> ops_;
  const std::unique_ptr<NcclControl> control_;
  NcclTransportOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<SendPeer>> peers_;
  KvWriteGate* gate_ = nullptr;  // for the receiver ExportPool makes after it is set
  std::unique_ptr<NcclReceiver> receiver_;
};

absl::Status NcclTransfer::Init(size_t staging_bytes) {
  TANDEM_ASSIGN_OR_RETURN(done_, transport_.ops().CreateEvent(peer_->device));
  if (staging_bytes > 0) {
    TANDEM_ASSIGN_OR_RETURN(staging_, transport_.ops().Alloc(peer_->device, staging_bytes));
  }
  return absl::OkStatus();
}

NcclTransfer::~NcclTransfer() {
  std::lock_guard<std::mutex> lock(peer_->mu);
  // Layers never issued leave receives on the decode side that nothing
  // would match. Send them anyway (the source memory is the pool's, its
  // content no longer matters: the prefill loop abandons transfers only to
  // retry them, into the same blocks, later in the pair's order), so the
  // pair stays usable. Only if earlier transfers hold ours back is the
  // pair's order lost, and the pair with it.
  if (!fully_issued() && peer_->broken.ok()) {
    std::fill(ready_.begin(), ready_.end(), true);
    absl::Status s;
    while (s.ok() && !peer_->queue.empty() && !fully_issued()) {
      NcclTransfer* head = peer_->queue.front();
      s = head->IssueReady();
      if (s.ok() && head->fully_issued()) {
        peer_->queue.pop_front();
      } else if (s.ok()) {
        break;
      }
    }
    if (s.ok() && !fully_issued()) {
      s = absl::AbortedError(absl::StrCat(Describe(), " abandoned behind an unfinished transfer"));
    }
    if (!s.ok()) transport_.Drop(peer_, s);
  }
  std::erase(peer_->queue, this);
  // Sends still queued read source blocks the prefill worker frees next.
  const bool finished = result_.has_value() && result_->ok();
  if (!finished && peer_->stream != nullptr && peer_->broken.ok()) {
    if (done_ != nullptr && transport_.ops().RecordEvent(done_, peer_->stream).ok()) {
      const absl::Time until = absl::Now() + absl::Seconds(10);
      absl::Status s = PollUntil(until, Describe(), [&] { return transport_.ops().EventDone(done_); });
      if (!s.ok()) transport_.Drop(peer_, s);
    }
  }
  if (staging_ != nullptr) transport_.ops().Free(peer_->device, staging_);
  if (done_ != nullptr) transport_.ops().DestroyEvent(done_);
}

absl::Status NcclTransfer::Fail(absl::Status s) {
  result_ = s;
  return s;
}

absl::Status NcclTransfer::SendLayer(int layer) {
  TANDEM_RETURN_IF_ERROR(CheckStillSending(Describe(), result_));
  TANDEM_RETURN_IF_ERROR(CheckLayer(Describe(), layer, static_cast<int>(ready_.size())));
  std::lock_guard<std::mutex> lock(peer_->mu);
  if (!peer_->broken.ok()) return Fail(absl::UnavailableError(absl::StrCat(Describe(), ": ", peer_->broken.message())));
  ready_[layer] = true;
  // Issue in queue order: ours only once every earlier transfer of the pair is out.
  while (!peer_->queue.empty()) {
    NcclTransfer* head = peer_->queue.front();
    absl::Status s = head->IssueReady();
    if (!s.ok()) {
      transport_.Drop(peer_, s);
      return Fail(s);
    }
    if (!head->fully_issued()) break;
    peer_->queue.pop_front();
  }
  return absl::OkStatus();
}

absl::Status NcclTransfer::IssueReady() {
  while (next_ < static_cast<int>(ready_.size()) && ready_[next_]) {
    TANDEM_RETURN_IF_ERROR(IssueLayer(next_));
    ++next_;
  }
  return absl::OkStatus();
}

absl::Status NcclTransfer::IssueLayer(int layer) {
  NcclOps& ops = transport_.ops();
  const uint64_t stride = dest_.block_stride();
  if (plan_.staged) {
    // Gather K of every run, then V, then one send (nccl_protocol.h).
    char* out = static_cast<char*>(staging_);
    for (int kv = 0; kv < 2; ++kv) {
      for (const BlockRun& r : plan_.runs) {
        const void* from = kv == 0 ? src_.KeyBlock(layer, r.src) : src_.ValueBlock(layer, r.src);
        const size_t bytes = static_cast<size_t>(r.count) * stride;
        TANDEM_RETURN_IF_ERROR(ops.CopyAsync(out, from, bytes, peer_->stream));
        out += bytes;
      }
    }
    TANDEM_RETURN_IF_ERROR(ops.Send(staging_, static_cast<size_t>(2 * plan_.blocks) * stride, 1, peer_->comm,
                                    peer_->stream));
  } else {
    TANDEM_RETURN_IF_ERROR(ops.GroupStart());
    absl::Status s;
    for (const BlockRun& r : plan_.runs) {
      const size_t bytes = static_cast<size_t>(r.count) * stride;
      if (s.ok()) s = ops.Send(src_.KeyBlock(layer, r.src), bytes, 1, peer_->comm, peer_->stream);
      if (s.ok()) s = ops.Send(src_.ValueBlock(layer, r.src), bytes, 1, peer_->comm, peer_->stream);
    }
    // The group is closed even after a failed enqueue (NCCL requires it).
    absl::Status end = ops.GroupEnd();
    TANDEM_RETURN_IF_ERROR(s);
    TANDEM_RETURN_IF_ERROR(end);
  }
  bytes_ += 2 * plan_.blocks * static_cast<int64_t>(stride);
  return absl::OkStatus();
}

absl::Status NcclTransfer::Finish() {
  if (result_.has_value()) return *result_;
  std::unique_lock<std::mutex> lock(peer_->mu);
  if (!peer_->broken.ok()) return Fail(absl::UnavailableError(absl::StrCat(Describe(), ": ", peer_->broken.message())));
  if (!fully_issued()) {
    // An earlier transfer of the pair holds ours back and will not send
    // its remaining layers any more (or ours skipped a layer).
    absl::Status s = absl::FailedPreconditionError(absl::StrCat(Describe(), ": Finish before all layers were sent"));
    transport_.Drop(peer_, s);
    return Fail(s);
  }
  absl::Status rec = transport_.ops().RecordEvent(done_, peer_->stream);
  if (!rec.ok()) {
    transport_.Drop(peer_, rec);
    return Fail(absl::UnavailableError(rec.message()));
  }
  lock.unlock();
  // Until the deadline or the finish timeout, whichever comes first: a
  // decode worker that stopped receiving leaves the sends pending, and
  // only the abort below ends them (and so frees the source blocks).
  bool by_timeout = false;
  const absl::Time until = FinishDeadline(spec_, absl::Now(), &by_timeout);
  absl::Status s = PollUntil(until, Describe(), [&]() -> absl::StatusOr<bool> {
    std::lock_guard<std::mutex> l(peer_->mu);
    if (!peer_->broken.ok()) return absl::UnavailableError(absl::StrCat(Describe(), ": ", peer_->broken.message()));
    absl::Status err;
    if (transport_.ops().CommState(peer_->comm, &err) == NcclCommState::kFailed) {
      return absl::UnavailableError(absl::StrCat(Describe(), ": ", err.message()));
    }
    return transport_.ops().EventDone(done_);
  });
  if (!s.ok()) {
    s = absl::IsDeadlineExceeded(s) ? FinishExpired(spec_, by_timeout, Describe())
                                    : absl::UnavailableError(s.message());
    lock.lock();
    transport_.Drop(peer_, s);
    return Fail(s);
  }
  result_ = absl::OkStatus();
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<KvTransport> MakeNcclTransportWith(std::shared_ptr<NcclOps> ops, std::unique_ptr<NcclControl> control,
                                                   NcclTransportOptions options) {
  return std::make_unique<NcclTransport>(std::move(ops), std::move(control), std::move(options));
}

absl::StatusOr<std::unique_ptr<KvTransport>> MakeNcclTransport() {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<NcclOps> ops, MakeCudaNcclOps());
  return MakeNcclTransportWith(std::move(ops), MakeGrpcNcclControl(), {});
}

}  // namespace tandem
