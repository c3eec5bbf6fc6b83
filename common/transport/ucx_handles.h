// RAII owners of UCX objects, so that every early return releases what was
// created and destruction order is explicit. Every UCX call is checked;
// failures become absl::Status carrying ucs_status_string().
//
// Threading: these wrappers add no locking. Whoever owns a worker decides
// how it is shared (see ucx_transport.cc); an endpoint, a remote key and a
// request belong to the worker they were made on and must be used and
// destroyed under that worker's discipline.
#pragma once

#include <ucp/api/ucp.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tandem {

// `what` failed with `s`: UNAVAILABLE for connection and peer errors (the
// common case), RESOURCE_EXHAUSTED for memory, INVALID_ARGUMENT for bad
// parameters, DEADLINE_EXCEEDED for UCX timeouts.
absl::Status UcxError(std::string_view what, ucs_status_t s);

struct UcxContextDeleter {
  void operator()(ucp_context_h c) const { ucp_cleanup(c); }
};
struct UcxWorkerDeleter {
  void operator()(ucp_worker_h w) const { ucp_worker_destroy(w); }
};
struct UcxRemoteKeyDeleter {
  void operator()(ucp_rkey_h k) const { ucp_rkey_destroy(k); }
};
using UcxContext = std::unique_ptr<std::remove_pointer_t<ucp_context_h>, UcxContextDeleter>;
using UcxWorker = std::unique_ptr<std::remove_pointer_t<ucp_worker_h>, UcxWorkerDeleter>;
// Must be destroyed before the endpoint it was unpacked on.
using UcxRemoteKey = std::unique_ptr<std::remove_pointer_t<ucp_rkey_h>, UcxRemoteKeyDeleter>;

// A context with `features` (UCP_FEATURE_*), configured from the UCX_*
// environment (UCX_TLS and friends).
absl::StatusOr<UcxContext> CreateUcxContext(uint64_t features);
absl::StatusOr<UcxWorker> CreateUcxWorker(ucp_context_h context, ucs_thread_mode_t mode);

// The worker's address as bytes, what a peer passes to ucp_ep_create.
absl::StatusOr<std::string> UcxWorkerAddress(ucp_worker_h worker);

// A registered (ucp_mem_map'ed) host region; unmapped on destruction.
class UcxMemoryRegion {
 public:
  static absl::StatusOr<UcxMemoryRegion> Map(ucp_context_h context, void* address, size_t length);
  UcxMemoryRegion(UcxMemoryRegion&& other) noexcept;
  UcxMemoryRegion& operator=(UcxMemoryRegion&& other) noexcept;
  UcxMemoryRegion(const UcxMemoryRegion&) = delete;
  UcxMemoryRegion& operator=(const UcxMemoryRegion&) = delete;
  ~UcxMemoryRegion();

  uint64_t address() const { return reinterpret_cast<uint64_t>(address_); }
  size_t length() const { return length_; }
  // The packed remote key a peer unpacks to write into this region.
  absl::StatusOr<std::string> PackRemoteKey() const;

 private:
  UcxMemoryRegion(ucp_context_h context, ucp_mem_h memh, void* address, size_t length)
      : context_(context), memh_(memh), address_(address), length_(length) {}
  void Reset();

  ucp_context_h context_ = nullptr;
  ucp_mem_h memh_ = nullptr;
  void* address_ = nullptr;
  size_t length_ = 0;
};

absl::StatusOr<UcxRemoteKey> UnpackUcxRemoteKey(ucp_ep_h ep, std::string_view packed);

// Waits for a non-blocking request (the ucs_status_ptr_t a *_nbx call
// returned), progressing `worker`, and frees it. Past `deadline` the
// request is released to UCX unfinished (it completes internally later)
// and DEADLINE_EXCEEDED returned. The caller must be allowed to progress
// `worker` for the whole wait (it holds the worker's lock, if any).
absl::Status WaitForUcxRequest(ucp_worker_h worker, ucs_status_ptr_t request, absl::Time deadline,
                               std::string_view what);

// How long a decode worker has to answer a new connection.
inline constexpr absl::Duration kUcxConnectTimeout = absl::Seconds(5);

// Completes the connection handshake of a new endpoint to decode worker
// `peer_id` (a flush), by `deadline` or kUcxConnectTimeout from now,
// whichever is first: closing an endpoint whose handshake is still in
// flight leaves a reply pending on the peer's worker, which UCX 1.13
// asserts on when that worker is destroyed. UNAVAILABLE when the peer did
// not answer in time but the caller's deadline has not passed.
absl::Status CompleteUcxHandshake(ucp_worker_h worker, ucp_ep_h ep, const std::string& peer_id, absl::Time deadline);

// An endpoint to a remote worker, with peer-failure detection: `on_error`
// runs (from ucp_worker_progress) when the peer dies, and outstanding
// operations then complete with an error instead of hanging.
class UcxEndpoint {
 public:
  static absl::StatusOr<UcxEndpoint> Connect(ucp_worker_h worker, std::string_view remote_address,
                                             ucp_err_handler_cb_t on_error, void* arg);
  UcxEndpoint(UcxEndpoint&& other) noexcept;
  UcxEndpoint& operator=(UcxEndpoint&& other) noexcept;
  UcxEndpoint(const UcxEndpoint&) = delete;
  UcxEndpoint& operator=(const UcxEndpoint&) = delete;
  ~UcxEndpoint() { Close(/*force=*/true); }

  ucp_ep_h get() const { return ep_; }
  // False when no enabled transport supports peer error handling (shared
  // memory only): then a dead peer shows only as a missed deadline.
  bool detects_peer_failure() const { return detects_peer_failure_; }
  // Closes the endpoint, flushing it first unless `force`; bounded by about
  // a second (a hung peer cannot block the caller longer). Idempotent.
  void Close(bool force);

 private:
  UcxEndpoint(ucp_worker_h worker, ucp_ep_h ep) : worker_(worker), ep_(ep) {}

  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  bool detects_peer_failure_ = true;
};

}  // namespace tandem
