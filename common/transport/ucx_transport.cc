#include "common/transport/ucx_transport.h"

#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

absl::Status UcxError(std::string_view what, ucs_status_t s) {
  return absl::UnavailableError(absl::StrCat(std::string(what), ": ", ucs_status_string(s)));
}

// Waits for a non-blocking UCX request, progressing the worker; frees it.
// DEADLINE_EXCEEDED past `deadline`, UNAVAILABLE if `failed` turns true.
absl::Status Wait(ucp_worker_h worker, ucs_status_ptr_t req, absl::Time deadline, const std::atomic<bool>* failed,
                  std::string_view what) {
  if (req == nullptr) return absl::OkStatus();
  if (UCS_PTR_IS_ERR(req)) return UcxError(what, UCS_PTR_STATUS(req));
  ucs_status_t s;
  // After the peer's error handler fired, requests should complete with an
  // error promptly; give them a second before giving up on them.
  absl::Time give_up_failed = absl::InfiniteFuture();
  while ((s = ucp_request_check_status(req)) == UCS_INPROGRESS) {
    if (ucp_worker_progress(worker) != 0) continue;
    if (failed != nullptr && failed->load() && give_up_failed == absl::InfiniteFuture()) {
      give_up_failed = absl::Now() + absl::Seconds(1);
    }
    const absl::Time now = absl::Now();
    if (now > deadline || now > give_up_failed) {
      ucp_request_cancel(worker, req);
      while (ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(worker);
      ucp_request_free(req);
      if (now > deadline) return absl::DeadlineExceededError(absl::StrCat(std::string(what), " missed its deadline"));
      return absl::UnavailableError(absl::StrCat(std::string(what), ": the peer is unreachable"));
    }
    std::this_thread::yield();
  }
  ucp_request_free(req);
  if (s != UCS_OK) return UcxError(what, s);
  return absl::OkStatus();
}

// A connection to one decode worker's pool: the endpoint and the unpacked
// remote key. `failed` is set by UCX's error handler when the peer dies.
struct Peer {
  std::string endpoint;  // the worker address it was created from
  ucp_ep_h ep = nullptr;
  ucp_rkey_h rkey = nullptr;
  std::atomic<bool> failed{false};
};

void OnPeerError(void* arg, ucp_ep_h, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->failed = true;
  TANDEM_LOG(WARNING) << "UCX endpoint error: " << ucs_status_string(status);
}

class UcxTransport;

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

 private:
  UcxTransport& transport_;
  std::shared_ptr<Peer> peer_;
  KvPoolView& src_;
  v1::KvPoolDescriptor dest_;
  KvTransferSpec spec_;
  std::vector<ucs_status_ptr_t> pending_;
  int64_t bytes_ = 0;
};

class UcxTransport final : public KvTransport {
 public:
  static absl::StatusOr<std::unique_ptr<UcxTransport>> Create() {
    std::unique_ptr<UcxTransport> t(new UcxTransport());
    ucp_config_t* config = nullptr;
    ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
    if (s != UCS_OK) return UcxError("ucp_config_read", s);
    ucp_params_t params = {};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features = UCP_FEATURE_RMA;
    params.mt_workers_shared = 1;
    s = ucp_init(&params, config, &t->context_);
    ucp_config_release(config);
    if (s != UCS_OK) return UcxError("ucp_init", s);
    ucp_worker_params_t wp = {};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_MULTI;
    s = ucp_worker_create(t->context_, &wp, &t->worker_);
    if (s != UCS_OK) return UcxError("ucp_worker_create", s);
    return t;
  }

  ~UcxTransport() override {
    stop_ = true;
    if (progress_thread_.joinable()) progress_thread_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [id, peer] : peers_) ClosePeer(*peer);
      peers_.clear();
    }
    if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  std::string_view name() const override { return "ucx"; }
  ucp_worker_h worker() const { return worker_; }

  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override {
    if (memh_ != nullptr) return absl::FailedPreconditionError("this UCX transport already exports a pool");
    const KvLayout& layout = pool.layout();
    const uint64_t region = static_cast<uint64_t>(layout.block_bytes()) * pool.num_blocks();
    // All of the pool's per-layer arrays must lie in one allocation, which
    // is mapped (and so registered) once.
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int l = 0; l < layout.num_layers; ++l) {
      for (void* base : {pool.KeyBlock(l, 0), pool.ValueBlock(l, 0)}) {
        lo = std::min(lo, reinterpret_cast<uint64_t>(base));
        hi = std::max(hi, reinterpret_cast<uint64_t>(base) + region);
      }
    }
    if (hi - lo != 2 * region * layout.num_layers) {
      return absl::UnimplementedError("the UCX transport needs the KV pool in one contiguous allocation");
    }
    ucp_mem_map_params_t mp = {};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = reinterpret_cast<void*>(lo);
    mp.length = hi - lo;
    ucs_status_t s = ucp_mem_map(context_, &mp, &memh_);
    if (s != UCS_OK) return UcxError("ucp_mem_map of the KV pool", s);
    void* rkey_buf = nullptr;
    size_t rkey_size = 0;
    s = ucp_rkey_pack(context_, memh_, &rkey_buf, &rkey_size);
    if (s != UCS_OK) return UcxError("ucp_rkey_pack", s);
    ucp_address_t* addr = nullptr;
    size_t addr_len = 0;
    s = ucp_worker_get_address(worker_, &addr, &addr_len);
    if (s != UCS_OK) {
      ucp_rkey_buffer_release(rkey_buf);
      return UcxError("ucp_worker_get_address", s);
    }
    v1::KvPoolDescriptor d;
    d.set_worker_id(self.worker_id);
    d.set_model_fingerprint(self.model_fingerprint);
    *d.mutable_layout() = ToProto(layout);
    d.set_num_blocks(pool.num_blocks());
    d.set_transport("ucx");
    d.set_endpoint(std::string(reinterpret_cast<const char*>(addr), addr_len));
    d.set_remote_key(std::string(static_cast<const char*>(rkey_buf), rkey_size));
    for (int l = 0; l < layout.num_layers; ++l) {
      d.add_key_base(reinterpret_cast<uint64_t>(pool.KeyBlock(l, 0)));
      d.add_value_base(reinterpret_cast<uint64_t>(pool.ValueBlock(l, 0)));
    }
    d.set_block_stride(static_cast<uint64_t>(layout.block_bytes()));
    ucp_worker_release_address(worker_, addr);
    ucp_rkey_buffer_release(rkey_buf);
    // Transports without native RMA (TCP) emulate puts with messages the
    // target must progress.
    progress_thread_ = std::thread([this] {
      while (!stop_) {
        if (ucp_worker_progress(worker_) == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    });
    return d;
  }

  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override {
    if (dest.transport() != "ucx") {
      return absl::FailedPreconditionError(absl::StrCat("decode worker ", dest.worker_id(), " speaks ",
                                                        dest.transport(), ", not ucx"));
    }
    TANDEM_RETURN_IF_ERROR(CheckKvCompatible(self, pool.layout(), dest));
    TANDEM_RETURN_IF_ERROR(CheckBlocksInRange(dest, spec.dst_blocks));
    if (spec.src_blocks.size() != spec.dst_blocks.size()) {
      return absl::InvalidArgumentError(absl::StrCat("transfer ", spec.transfer_id, ": ", spec.src_blocks.size(),
                                                     " source blocks but ", spec.dst_blocks.size(), " destinations"));
    }
    TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<Peer> peer, Connect(dest));
    return std::unique_ptr<KvTransfer>(new UcxTransfer(*this, std::move(peer), pool, dest, std::move(spec)));
  }

  void Disconnect(std::string_view worker_id) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(std::string(worker_id));
    if (it == peers_.end()) return;
    ClosePeer(*it->second);
    peers_.erase(it);
  }

 private:
  UcxTransport() = default;

  absl::StatusOr<std::shared_ptr<Peer>> Connect(const v1::KvPoolDescriptor& dest) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(dest.worker_id());
    if (it != peers_.end()) {
      if (!it->second->failed && it->second->endpoint == dest.endpoint()) return it->second;
      ClosePeer(*it->second);  // the worker restarted or failed
      peers_.erase(it);
    }
    auto peer = std::make_shared<Peer>();
    peer->endpoint = dest.endpoint();
    ucp_ep_params_t ep = {};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = reinterpret_cast<const ucp_address_t*>(dest.endpoint().data());
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = OnPeerError;
    ep.err_handler.arg = peer.get();
    ucs_status_t s = ucp_ep_create(worker_, &ep, &peer->ep);
    if (s != UCS_OK) return UcxError(absl::StrCat("connecting to decode worker ", dest.worker_id()), s);
    s = ucp_ep_rkey_unpack(peer->ep, dest.remote_key().data(), &peer->rkey);
    if (s != UCS_OK) {
      ClosePeer(*peer);
      return UcxError(absl::StrCat("remote key of decode worker ", dest.worker_id()), s);
    }
    peers_[dest.worker_id()] = peer;
    return peer;
  }

  // Called with mu_ held (or from the destructor).
  void ClosePeer(Peer& peer) {
    if (peer.rkey != nullptr) ucp_rkey_destroy(peer.rkey);
    peer.rkey = nullptr;
    if (peer.ep == nullptr) return;
    ucp_request_param_t p = {};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    Wait(worker_, ucp_ep_close_nbx(peer.ep, &p), absl::Now() + absl::Seconds(2), nullptr, "closing a UCX endpoint")
        .IgnoreError();
    peer.ep = nullptr;
  }

  friend class UcxTransfer;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread progress_thread_;
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Peer>> peers_;
};

UcxTransfer::~UcxTransfer() {
  // An abandoned transfer's puts must not outlive their requests.
  for (ucs_status_ptr_t r : pending_) {
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
      ucp_request_cancel(transport_.worker(), r);
      while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(transport_.worker());
      ucp_request_free(r);
    }
  }
}

absl::Status UcxTransfer::SendLayer(int layer) {
  if (peer_->failed) {
    return absl::UnavailableError(absl::StrCat("decode worker ", dest_.worker_id(), " is unreachable"));
  }
  const uint64_t bytes = dest_.block_stride();
  ucp_request_param_t p = {};
  for (size_t i = 0; i < spec_.src_blocks.size(); ++i) {
    const uint64_t offset = static_cast<uint64_t>(spec_.dst_blocks[i]) * bytes;
    const std::pair<void*, uint64_t> puts[] = {
        {src_.KeyBlock(layer, spec_.src_blocks[i]), dest_.key_base(layer) + offset},
        {src_.ValueBlock(layer, spec_.src_blocks[i]), dest_.value_base(layer) + offset}};
    for (const auto& [local, remote] : puts) {
      ucs_status_ptr_t r = ucp_put_nbx(peer_->ep, local, bytes, remote, peer_->rkey, &p);
      if (UCS_PTR_IS_ERR(r)) return UcxError(absl::StrCat("put to ", dest_.worker_id()), UCS_PTR_STATUS(r));
      if (r != nullptr) pending_.push_back(r);
      bytes_ += static_cast<int64_t>(bytes);
    }
  }
  // Let the transports move data while later layers compute.
  ucp_worker_progress(transport_.worker());
  return absl::OkStatus();
}

absl::Status UcxTransfer::Finish() {
  const std::string what = absl::StrCat("KV transfer ", spec_.transfer_id, " to ", dest_.worker_id());
  absl::Status status;
  for (ucs_status_ptr_t& r : pending_) {
    absl::Status s = Wait(transport_.worker(), r, spec_.deadline, &peer_->failed, what);
    r = nullptr;
    if (status.ok()) status = s;
  }
  pending_.clear();
  if (status.ok()) {
    // Puts are complete locally; the flush makes them complete remotely.
    ucp_request_param_t p = {};
    status = Wait(transport_.worker(), ucp_ep_flush_nbx(peer_->ep, &p), spec_.deadline, &peer_->failed, what);
  }
  if (!status.ok()) transport_.Disconnect(dest_.worker_id());
  return status;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransport>> MakeUcxTransport() {
  TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<UcxTransport> t, UcxTransport::Create());
  return std::unique_ptr<KvTransport>(std::move(t));
}

}  // namespace tandem
