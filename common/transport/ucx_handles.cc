#include "common/transport/ucx_handles.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tandem {

absl::Status UcxError(std::string_view what, ucs_status_t s) {
  const std::string message = absl::StrCat(std::string(what), ": ", ucs_status_string(s));
  switch (s) {
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
      return absl::ResourceExhaustedError(message);
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return absl::InvalidArgumentError(message);
    case UCS_ERR_TIMED_OUT:
      return absl::DeadlineExceededError(message);
    default:
      return absl::UnavailableError(message);
  }
}

absl::StatusOr<UcxContext> CreateUcxContext(uint64_t features) {
  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) return UcxError("ucp_config_read (check the UCX_* environment)", s);
  ucp_params_t params = {};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = features;
  // A transport's workers run on different threads (progress thread,
  // prefill loop) and share the context's registration caches.
  params.mt_workers_shared = 1;
  ucp_context_h context = nullptr;
  s = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (s != UCS_OK) return UcxError("ucp_init", s);
  return UcxContext(context);
}

absl::StatusOr<UcxWorker> CreateUcxWorker(ucp_context_h context, ucs_thread_mode_t mode) {
  ucp_worker_params_t params = {};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = mode;
  ucp_worker_h worker = nullptr;
  ucs_status_t s = ucp_worker_create(context, &params, &worker);
  if (s != UCS_OK) return UcxError("ucp_worker_create", s);
  return UcxWorker(worker);
}

absl::StatusOr<std::string> UcxWorkerAddress(ucp_worker_h worker) {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  ucs_status_t s = ucp_worker_get_address(worker, &address, &length);
  if (s != UCS_OK) return UcxError("ucp_worker_get_address", s);
  std::string bytes(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(worker, address);
  return bytes;
}

absl::StatusOr<UcxMemoryRegion> UcxMemoryRegion::Map(ucp_context_h context, void* address, size_t length) {
  ucp_mem_map_params_t params = {};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = address;
  params.length = length;
  ucp_mem_h memh = nullptr;
  ucs_status_t s = ucp_mem_map(context, &params, &memh);
  if (s != UCS_OK) return UcxError(absl::StrCat("ucp_mem_map of ", length, " bytes of the KV pool"), s);
  return UcxMemoryRegion(context, memh, address, length);
}

UcxMemoryRegion::UcxMemoryRegion(UcxMemoryRegion&& other) noexcept { *this = std::move(other); }

UcxMemoryRegion& UcxMemoryRegion::operator=(UcxMemoryRegion&& other) noexcept {
  if (this != &other) {
    Reset();
    context_ = std::exchange(other.context_, nullptr);
    memh_ = std::exchange(other.memh_, nullptr);
    address_ = std::exchange(other.address_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

UcxMemoryRegion::~UcxMemoryRegion() { Reset(); }

void UcxMemoryRegion::Reset() {
  if (memh_ != nullptr) ucp_mem_unmap(context_, memh_);
  memh_ = nullptr;
}

absl::StatusOr<std::string> UcxMemoryRegion::PackRemoteKey() const {
  void* buffer = nullptr;
  size_t size = 0;
  ucs_status_t s = ucp_rkey_pack(context_, memh_, &buffer, &size);
  if (s != UCS_OK) return UcxError("ucp_rkey_pack", s);
  std::string packed(static_cast<const char*>(buffer), size);
  ucp_rkey_buffer_release(buffer);
  return packed;
}

absl::StatusOr<UcxRemoteKey> UnpackUcxRemoteKey(ucp_ep_h ep, std::string_view packed) {
  ucp_rkey_h rkey = nullptr;
  ucs_status_t s = ucp_ep_rkey_unpack(ep, packed.data(), &rkey);
  if (s != UCS_OK) return UcxError("ucp_ep_rkey_unpack", s);
  return UcxRemoteKey(rkey);
}

absl::Status WaitForUcxRequest(ucp_worker_h worker, ucs_status_ptr_t request, absl::Time deadline,
                               std::string_view what) {
  if (request == nullptr) return absl::OkStatus();
  if (UCS_PTR_IS_ERR(request)) return UcxError(what, UCS_PTR_STATUS(request));
  ucs_status_t s;
  while ((s = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    if (ucp_worker_progress(worker) != 0) continue;
    if (absl::Now() > deadline) {
      ucp_request_free(request);
      return absl::DeadlineExceededError(absl::StrCat(std::string(what), ": not done by its deadline"));
    }
    std::this_thread::yield();
  }
  ucp_request_free(request);
  if (s != UCS_OK) return UcxError(what, s);
  return absl::OkStatus();
}

absl::Status CompleteUcxHandshake(ucp_worker_h worker, ucp_ep_h ep, const std::string& peer_id, absl::Time deadline) {
  ucp_request_param_t params = {};
  absl::Status connected = WaitForUcxRequest(worker, ucp_ep_flush_nbx(ep, &params),
                                             std::min(deadline, absl::Now() + kUcxConnectTimeout),
                                             absl::StrCat("connecting to decode worker ", peer_id));
  if (absl::IsDeadlineExceeded(connected) && absl::Now() <= deadline) {
    return absl::UnavailableError(absl::StrCat("decode worker ", peer_id, " did not answer within ",
                                               absl::FormatDuration(kUcxConnectTimeout)));
  }
  return connected;
}

absl::StatusOr<UcxEndpoint> UcxEndpoint::Connect(ucp_worker_h worker, std::string_view remote_address,
                                                 ucp_err_handler_cb_t on_error, void* arg) {
  ucp_ep_params_t params = {};
  params.field_mask =
      UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(remote_address.data());
  params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  params.err_handler.cb = on_error;
  params.err_handler.arg = arg;
  ucp_ep_h ep = nullptr;
  ucs_status_t s = ucp_ep_create(worker, &params, &ep);
  if (s == UCS_ERR_UNREACHABLE) {
    // No enabled transport can detect peer failure (UCX_TLS=shm,cma,self:
    // only TCP and IB can). Connect without it; waits are then bounded by
    // the callers' deadlines alone.
    params.field_mask &= ~static_cast<uint64_t>(UCP_EP_PARAM_FIELD_ERR_HANDLER);
    params.err_mode = UCP_ERR_HANDLING_MODE_NONE;
    s = ucp_ep_create(worker, &params, &ep);
    if (s == UCS_OK) {
      UcxEndpoint endpoint(worker, ep);
      endpoint.detects_peer_failure_ = false;
      return endpoint;
    }
  }
  if (s != UCS_OK) return UcxError("ucp_ep_create", s);
  return UcxEndpoint(worker, ep);
}

UcxEndpoint::UcxEndpoint(UcxEndpoint&& other) noexcept { *this = std::move(other); }

UcxEndpoint& UcxEndpoint::operator=(UcxEndpoint&& other) noexcept {
  if (this != &other) {
    Close(/*force=*/true);
    worker_ = std::exchange(other.worker_, nullptr);
    ep_ = std::exchange(other.ep_, nullptr);
    detects_peer_failure_ = other.detects_peer_failure_;
  }
  return *this;
}

void UcxEndpoint::Close(bool force) {
  if (ep_ == nullptr) return;
  ucp_request_param_t params = {};
  params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  // UCX allows a forced close only on endpoints with peer error handling.
  params.flags = force && detects_peer_failure_ ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  // Errors here mean the peer is already gone, which is what closing wants.
  WaitForUcxRequest(worker_, ucp_ep_close_nbx(ep_, &params), absl::Now() + absl::Seconds(1), "ucp_ep_close_nbx")
      .IgnoreError();
  ep_ = nullptr;
}

}  // namespace tandem
