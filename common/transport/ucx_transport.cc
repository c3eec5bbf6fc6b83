#include "common/transport/ucx_transport.h"

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/transport/transfer_checks.h"
#include "common/transport/ucx_handles.h"
#include "common/transport/ucx_remote_keys.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// How long the target's progress thread sleeps in poll() at most; wakeups
// normally come through the worker's event fd, this only bounds a missed one.
constexpr int kProgressPollMs = 10;

// How long a transfer that failed or ran late waits for the puts it already
// issued to land before it judges the peer unresponsive. The connection is
// shared by every transfer to that decode worker, so it is dropped only on
// such evidence (or UCX's error handler), never for one transfer's failure.
constexpr absl::Duration kAbortDrain = absl::Seconds(2);

// A connection to one decode worker's pool. Every member except `failed`
// is guarded by the owning transport's send mutex, and so is the last
// release of a shared_ptr<Peer> (destroying it closes the endpoint, which
// progresses the send worker).
struct Peer {
  struct Region {
    uint64_t address = 0;
    uint64_t length = 0;
    UcxRemoteKey key;
  };

  std::string worker_id;
  std::string address;     // the UCX worker address it was created from
  std::string remote_key;  // the descriptor's remote_key it was created from
  // Set by UCX's error handler (inside ucp_worker_progress) when the peer dies.
  std::atomic<bool> failed{false};
  bool closed = false;
  std::optional<UcxEndpoint> ep;
  std::vector<Region> regions;  // destroyed before `ep` (see Close)

  // The remote key and region covering [address, address + length), or null.
  ucp_rkey_h KeyFor(uint64_t address, uint64_t length) const {
    for (const Region& r : regions) {
      if (address >= r.address && address + length <= r.address + r.length) return r.key.get();
    }
    return nullptr;
  }

  void Close(bool force) {
    if (closed) return;
    closed = true;
    regions.clear();  // rkeys must go before their endpoint
    if (ep) ep->Close(force || failed.load());
    ep.reset();
  }

  ~Peer() { Close(/*force=*/true); }
};

void OnPeerError(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->failed = true;
  TANDEM_LOG(WARNING) << "UCX connection to decode worker " << peer->worker_id
                      << " failed: " << ucs_status_string(status);
}

class UcxTransport;

// One request's puts to one peer. Used by one thread; every UCX call goes
// through the transport's send mutex.
class UcxTransfer final : public KvTransfer {
 public:
  UcxTransfer(UcxTransport& transport, std::shared_ptr<Peer> peer, KvPoolView& src, v1::KvPoolDescriptor dest,
              KvTransferSpec spec)
      : transport_(transport), peer_(std::move(peer)), src_(src), dest_(std::move(dest)), spec_(std::move(spec)) {}
  ~UcxTransfer() override;

  absl::Status SendLayer(int layer) override;
  absl::Status Finish() override;
  int64_t bytes_sent() const override { return bytes_; }
  const std::string& id() const override { return spec_.transfer_id; }
  std::string_view transport() const override { return "ucx"; }
  // For a transfer created past its deadline (and without a peer).
  void MarkLate() { result_ = MissedDeadline(Describe()); }

 private:
  absl::Status FinishBy(absl::Time deadline);
  // Issues one put of `length` bytes; the request, if any, is released at
  // once: the endpoint flush in Finish is what waits for completion.
  absl::Status Put(const void* local, uint64_t remote, uint64_t length);
  // Flushes the endpoint (every put issued on it so far) by `deadline`: OK,
  // DEADLINE_EXCEEDED if it is not done by then, or UCX's error when the
  // peer failed.
  absl::Status Flush(absl::Time deadline);
  // Ends this transfer with `status` and leaves the shared connection
  // alone: no more puts, and those already issued are waited for (up to
  // kAbortDrain), so none lands after the caller frees the destination.
  // Only a connection that cannot complete them is dropped.
  absl::Status Abort(absl::Status status);
  // Ends this transfer with `status` on a connection that failed (UCX
  // error, peer gone): drops it so no later transfer reuses it.
  absl::Status FailPeer(absl::Status status);
  std::string Describe() const {
    return absl::StrCat("KV transfer ", spec_.transfer_id, " to decode worker ", dest_.worker_id());
  }

  UcxTransport& transport_;
  std::shared_ptr<Peer> peer_;  // null only for a transfer born late
  KvPoolView& src_;
  v1::KvPoolDescriptor dest_;
  KvTransferSpec spec_;
  int64_t bytes_ = 0;
  bool puts_in_flight_ = false;
  std::optional<absl::Status> result_;  // set once Finish or a failure decided it
};

class UcxTransport final : public KvTransport {
 public:
  static absl::StatusOr<std::unique_ptr<UcxTransport>> Create() {
    std::unique_ptr<UcxTransport> t(new UcxTransport());
    TANDEM_ASSIGN_OR_RETURN(t->context_, CreateUcxContext(UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP));
    return t;
  }

  ~UcxTransport() override {
    if (progress_thread_.joinable()) {
      stop_ = true;
      ucp_worker_signal(target_worker_.get());
      progress_thread_.join();
    }
    {
      std::lock_guard<std::mutex> lock(send_mu_);
      for (auto& [id, peer] : peers_) peer->Close(/*force=*/true);
      peers_.clear();
    }
    // Children before parents: mappings and workers before the context.
    regions_.clear();
    target_worker_.reset();
    send_worker_.reset();
    context_.reset();
  }

  std::string_view name() const override { return "ucx"; }

  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override;
  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override;

  void Disconnect(std::string_view worker_id) override {
    std::lock_guard<std::mutex> lock(send_mu_);
    auto it = peers_.find(std::string(worker_id));
    if (it == peers_.end()) return;
    it->second->Close(/*force=*/false);
    peers_.erase(it);
  }

 private:
  friend class UcxTransfer;
  UcxTransport() = default;

  // The cached connection to `dest`'s worker, or a new one, established by
  // `deadline` (at most kUcxConnectTimeout from now).
  absl::StatusOr<std::shared_ptr<Peer>> Connect(const v1::KvPoolDescriptor& dest, absl::Time deadline);
  void ProgressLoop(int event_fd);

  // Force-closes `peer` and forgets it, unless the cache already holds a
  // newer connection to the same worker. Called with send_mu_ held.
  void DropPeerLocked(const std::shared_ptr<Peer>& peer) {
    peer->Close(/*force=*/true);
    auto it = peers_.find(peer->worker_id);
    if (it != peers_.end() && it->second == peer) peers_.erase(it);
  }

  UcxContext context_;

  // Decode side. The target worker is driven only by the progress thread
  // once that runs (MULTI mode still lets ExportPool read its address and
  // the destructor signal it from other threads).
  std::mutex export_mu_;  // guards the members below against concurrent ExportPool
  UcxWorker target_worker_;
  std::string target_address_;
  std::vector<UcxMemoryRegion> regions_;
  std::atomic<bool> stop_{false};
  std::thread progress_thread_;

  // Prefill side: the send worker, the peer cache, and every Peer's UCX
  // objects are used only under send_mu_ (the worker is SERIALIZED).
  std::mutex send_mu_;
  UcxWorker send_worker_;
  std::unordered_map<std::string, std::shared_ptr<Peer>> peers_;
};

absl::StatusOr<v1::KvPoolDescriptor> UcxTransport::ExportPool(KvPoolView& pool, const KvEndpointInfo& self) {
  if (pool.on_device()) {
    return absl::UnimplementedError("the UCX KV transport of this build moves host memory only; the pool is on a GPU");
  }
  TANDEM_RETURN_IF_ERROR(CheckExportablePool(pool, "ucx"));
  const KvLayout& layout = pool.layout();
  const uint64_t array_bytes = static_cast<uint64_t>(layout.block_bytes()) * pool.num_blocks();
  std::lock_guard<std::mutex> lock(export_mu_);
  if (target_worker_ == nullptr) {
    TANDEM_ASSIGN_OR_RETURN(UcxWorker worker, CreateUcxWorker(context_.get(), UCS_THREAD_MODE_MULTI));
    TANDEM_ASSIGN_OR_RETURN(target_address_, UcxWorkerAddress(worker.get()));
    int event_fd = -1;
    ucs_status_t s = ucp_worker_get_efd(worker.get(), &event_fd);
    if (s != UCS_OK) return UcxError("ucp_worker_get_efd", s);
    target_worker_ = std::move(worker);
    // Without native RMA (TCP) puts are emulated with messages that this
    // side must progress for them to land.
    progress_thread_ = std::thread([this, event_fd] { ProgressLoop(event_fd); });
  }

  // Each layer's K and V array is contiguous; adjacent arrays (one
  // allocation, as in the CPU backend) merge into a single registration.
  std::vector<AddressRange> arrays;
  for (int l = 0; l < layout.num_layers; ++l) {
    arrays.push_back({reinterpret_cast<uint64_t>(pool.KeyBlock(l, 0)), array_bytes});
    arrays.push_back({reinterpret_cast<uint64_t>(pool.ValueBlock(l, 0)), array_bytes});
  }
  std::vector<UcxRemoteRegion> published;
  std::vector<UcxMemoryRegion> mapped;
  for (const AddressRange& range : MergeAddressRanges(std::move(arrays))) {
    TANDEM_ASSIGN_OR_RETURN(UcxMemoryRegion region,
                            UcxMemoryRegion::Map(context_.get(), reinterpret_cast<void*>(range.address),
                                                 range.length));
    TANDEM_ASSIGN_OR_RETURN(std::string key, region.PackRemoteKey());
    published.push_back({range.address, range.length, std::move(key)});
    mapped.push_back(std::move(region));
  }
  for (UcxMemoryRegion& r : mapped) regions_.push_back(std::move(r));

  v1::KvPoolDescriptor d = DescribePool(pool, self, "ucx");
  d.set_endpoint(target_address_);
  d.set_remote_key(EncodeUcxRemoteRegions(published));
  return d;
}

void UcxTransport::ProgressLoop(int event_fd) {
  ucp_worker_h worker = target_worker_.get();
  while (!stop_.load()) {
    while (ucp_worker_progress(worker) != 0) {
    }
    // Arm the event fd; BUSY means events arrived meanwhile: progress again.
    const ucs_status_t s = ucp_worker_arm(worker);
    if (s == UCS_ERR_BUSY) continue;
    if (s != UCS_OK) {
      TANDEM_LOG(WARNING) << "ucp_worker_arm: " << ucs_status_string(s);
      std::this_thread::sleep_for(std::chrono::milliseconds(kProgressPollMs));
      continue;
    }
    pollfd p = {event_fd, POLLIN, 0};
    poll(&p, 1, kProgressPollMs);
  }
}

absl::StatusOr<std::unique_ptr<KvTransfer>> UcxTransport::StartTransfer(KvPoolView& pool,
                                                                        const KvEndpointInfo& self,
                                                                        const v1::KvPoolDescriptor& dest,
                                                                        KvTransferSpec spec) {
  TANDEM_RETURN_IF_ERROR(CheckDescriptorTransport(dest, "ucx"));
  if (pool.on_device()) {
    return absl::UnimplementedError("the UCX KV transport of this build moves host memory only; the pool is on a GPU");
  }
  TANDEM_RETURN_IF_ERROR(CheckTransfer(self, pool, dest, spec));
  if (PastDeadline(spec)) {
    // Nothing to connect for: the transfer reports the deadline from Finish.
    auto late = std::make_unique<UcxTransfer>(*this, nullptr, pool, dest, std::move(spec));
    late->MarkLate();
    return std::unique_ptr<KvTransfer>(std::move(late));
  }
  TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Peer> peer, Connect(dest, spec.deadline));
  return std::unique_ptr<KvTransfer>(new UcxTransfer(*this, std::move(peer), pool, dest, std::move(spec)));
}

absl::StatusOr<std::shared_ptr<Peer>> UcxTransport::Connect(const v1::KvPoolDescriptor& dest, absl::Time deadline) {
  TANDEM_ASSIGN_OR_RETURN(std::vector<UcxRemoteRegion> published,
                          DecodeUcxRemoteRegions(dest.remote_key(), dest.worker_id()));
  std::lock_guard<std::mutex> lock(send_mu_);
  if (send_worker_ == nullptr) {
    TANDEM_ASSIGN_OR_RETURN(send_worker_, CreateUcxWorker(context_.get(), UCS_THREAD_MODE_SERIALIZED));
  }
  auto it = peers_.find(dest.worker_id());
  if (it != peers_.end()) {
    const Peer& cached = *it->second;
    if (!cached.failed && !cached.closed && cached.address == dest.endpoint() &&
        cached.remote_key == dest.remote_key()) {
      return it->second;
    }
    // The worker restarted (new address or keys) or its connection failed.
    DropPeerLocked(it->second);
  }
  auto peer = std::make_shared<Peer>();
  peer->worker_id = dest.worker_id();
  peer->address = dest.endpoint();
  peer->remote_key = dest.remote_key();
  absl::StatusOr<UcxEndpoint> ep = UcxEndpoint::Connect(send_worker_.get(), dest.endpoint(), OnPeerError, peer.get());
  if (!ep.ok()) {
    return absl::Status(ep.status().code(),
                        absl::StrCat("connecting to decode worker ", dest.worker_id(), ": ", ep.status().message()));
  }
  if (!ep->detects_peer_failure()) {
    TANDEM_LOG(WARNING) << "no enabled UCX transport detects peer failure (UCX_TLS); a dead decode worker "
                        << dest.worker_id() << " will show as missed deadlines";
  }
  peer->ep.emplace(std::move(*ep));
  for (const UcxRemoteRegion& r : published) {
    absl::StatusOr<UcxRemoteKey> key = UnpackUcxRemoteKey(peer->ep->get(), r.packed_key);
    if (!key.ok()) {
      return absl::Status(key.status().code(), absl::StrCat("remote key of decode worker ", dest.worker_id(), ": ",
                                                            key.status().message()));
    }
    peer->regions.push_back({r.address, r.length, std::move(*key)});
  }
  if (absl::Status s = CompleteUcxHandshake(send_worker_.get(), peer->ep->get(), dest.worker_id(), deadline);
      !s.ok()) {
    peer->failed = true;
    return s;
  }
  peers_[dest.worker_id()] = peer;
  return peer;
}

UcxTransfer::~UcxTransfer() {
  // Puts still in flight read the source blocks, which the prefill worker
  // frees after this; wait for them (briefly) before letting go.
  if (puts_in_flight_ && !result_.has_value()) {
    FinishBy(std::min(spec_.deadline, absl::Now() + absl::Seconds(2))).IgnoreError();
  }
  std::lock_guard<std::mutex> lock(transport_.send_mu_);
  peer_.reset();
}

absl::Status UcxTransfer::FailPeer(absl::Status status) {
  if (peer_ != nullptr) {
    std::lock_guard<std::mutex> lock(transport_.send_mu_);
    transport_.DropPeerLocked(peer_);
  }
  puts_in_flight_ = false;  // the closed endpoint completes or cancels them
  result_ = status;
  return status;
}

absl::Status UcxTransfer::Abort(absl::Status status) {
  if (peer_ != nullptr && puts_in_flight_) {
    if (absl::Status drained = Flush(absl::Now() + kAbortDrain); !drained.ok()) {
      TANDEM_LOG(WARNING) << Describe() << ": puts not complete " << absl::FormatDuration(kAbortDrain)
                          << " after it ended (" << drained << "); dropping the connection";
      return FailPeer(std::move(status));
    }
  }
  puts_in_flight_ = false;
  result_ = status;
  return status;
}

absl::Status UcxTransfer::Put(const void* local, uint64_t remote, uint64_t length) {
  ucp_rkey_h key = peer_->KeyFor(remote, length);
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(Describe(), ": destination range [", remote, ", +", length,
                                                   ") is outside every region the pool descriptor registered"));
  }
  ucp_request_param_t params = {};
  ucs_status_ptr_t request = ucp_put_nbx(peer_->ep->get(), local, length, remote, key, &params);
  if (UCS_PTR_IS_ERR(request)) return UcxError(absl::StrCat(Describe(), ": ucp_put_nbx"), UCS_PTR_STATUS(request));
  if (request != nullptr) ucp_request_free(request);
  puts_in_flight_ = true;
  bytes_ += static_cast<int64_t>(length);
  return absl::OkStatus();
}

absl::Status UcxTransfer::SendLayer(int layer) {
  TANDEM_RETURN_IF_ERROR(CheckStillSending(Describe(), result_));
  if (absl::Status s = CheckLayer(Describe(), layer, dest_.key_base_size()); !s.ok()) return Abort(std::move(s));
  // Past its deadline the destination may be freed any moment: no more puts.
  if (absl::Status s = CheckTransferDeadline(spec_); !s.ok()) return Abort(std::move(s));
  absl::Status status;
  bool peer_failed = false;
  {
    std::lock_guard<std::mutex> lock(transport_.send_mu_);
    if (peer_->closed || peer_->failed) {
      status = absl::UnavailableError(absl::StrCat(Describe(), ": the connection is gone"));
      peer_failed = true;
    }
    const uint64_t stride = dest_.block_stride();
    const std::vector<int32_t>& src = spec_.src_blocks;
    const std::vector<int32_t>& dst = spec_.dst_blocks;
    // A run of blocks consecutive on both sides is one put per K and V.
    for (size_t i = 0; status.ok() && i < src.size();) {
      size_t run = 1;
      while (i + run < src.size() && src[i + run] == src[i] + static_cast<int32_t>(run) &&
             dst[i + run] == dst[i] + static_cast<int32_t>(run)) {
        ++run;
      }
      const uint64_t offset = static_cast<uint64_t>(dst[i]) * stride;
      status = Put(src_.KeyBlock(layer, src[i]), dest_.key_base(layer) + offset, run * stride);
      if (status.ok()) status = Put(src_.ValueBlock(layer, src[i]), dest_.value_base(layer) + offset, run * stride);
      i += run;
    }
    // Let the transports move data while the next layers compute.
    if (status.ok()) ucp_worker_progress(transport_.send_worker_.get());
  }
  if (status.ok()) return absl::OkStatus();
  // A range outside the registered regions is this transfer's fault; an
  // error of ucp_put_nbx or a dead connection is the peer's.
  if (peer_failed || !absl::IsInvalidArgument(status)) return FailPeer(std::move(status));
  return Abort(std::move(status));
}

absl::Status UcxTransfer::Finish() {
  if (result_.has_value()) return *result_;
  bool by_timeout = false;
  const absl::Time deadline = FinishDeadline(spec_, absl::Now(), &by_timeout);
  if (!by_timeout || peer_ == nullptr || !puts_in_flight_) return FinishBy(deadline);
  absl::Status flushed = Flush(deadline);
  if (absl::IsDeadlineExceeded(flushed)) {
    // The peer has not confirmed writes it had the whole finish timeout
    // for: it is gone or hung. The connection is dropped (that is the
    // evidence the drain in Abort would wait for again), which ends the
    // puts, so the caller may free the source blocks now.
    TANDEM_LOG(WARNING) << Describe() << ": " << FinishTimedOut(spec_) << "; dropping the connection";
    return FailPeer(FinishTimedOut(spec_));
  }
  if (!flushed.ok()) return FailPeer(std::move(flushed));
  puts_in_flight_ = false;
  result_ = absl::OkStatus();
  return absl::OkStatus();
}

absl::Status UcxTransfer::FinishBy(absl::Time deadline) {
  if (result_.has_value()) return *result_;
  const absl::Status late = MissedDeadline(Describe());
  if (absl::Now() > deadline) return Abort(late);
  absl::Status flushed = Flush(deadline);
  if (absl::IsDeadlineExceeded(flushed)) return Abort(late);
  if (!flushed.ok()) return FailPeer(std::move(flushed));
  puts_in_flight_ = false;
  result_ = absl::OkStatus();
  return absl::OkStatus();
}

absl::Status UcxTransfer::Flush(absl::Time deadline) {
  ucs_status_ptr_t flush;
  {
    std::lock_guard<std::mutex> lock(transport_.send_mu_);
    if (peer_->closed || peer_->failed) {
      flush = UCS_STATUS_PTR(UCS_ERR_CONNECTION_RESET);
    } else {
      ucp_request_param_t params = {};
      flush = ucp_ep_flush_nbx(peer_->ep->get(), &params);
    }
  }
  if (UCS_PTR_IS_ERR(flush)) return UcxError(absl::StrCat(Describe(), ": flush"), UCS_PTR_STATUS(flush));
  // The flush completes once every put is complete in the peer's memory.
  // The lock is taken per round so other threads may use the worker.
  int idle_rounds = 0;
  while (flush != nullptr) {
    std::unique_lock<std::mutex> lock(transport_.send_mu_);
    const bool progressed = ucp_worker_progress(transport_.send_worker_.get()) != 0;
    const ucs_status_t s = ucp_request_check_status(flush);
    if (s != UCS_INPROGRESS) {
      ucp_request_free(flush);
      lock.unlock();
      if (s != UCS_OK) return UcxError(absl::StrCat(Describe(), ": flush"), s);
      break;
    }
    if (absl::Now() > deadline) {
      ucp_request_free(flush);  // UCX completes it on its own later
      lock.unlock();
      return absl::DeadlineExceededError(absl::StrCat(Describe(), ": flush not complete by its deadline"));
    }
    lock.unlock();
    idle_rounds = progressed ? 0 : idle_rounds + 1;
    if (idle_rounds > 1000) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    } else {
      std::this_thread::yield();
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransport>> MakeUcxTransport() {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<UcxTransport> t, UcxTransport::Create());
  return std::unique_ptr<KvTransport>(std::move(t));
}

}  // namespace tandem
