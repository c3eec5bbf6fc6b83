#include "common/transport/cuda_ipc_transport.h"

#include <cuda.h>
#include <cuda_runtime.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/transport/block_runs.h"
#include "common/transport/cuda_block_copy.h"
#include "common/transport/cuda_copy_lane.h"
#include "common/transport/cuda_handles.h"
#include "common/transport/cuda_ipc_descriptor.h"
#include "common/transport/host_id.h"
#include "common/transport/layer_batches.h"
#include "common/transport/poll_backoff.h"
#include "common/transport/transfer_checks.h"
#include "common/transport/transport_selection.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// Copies go through the gather kernel (cuda_block_copy.h: many layers and
// all their blocks per launch); one cudaMemcpyAsync per run of blocks, K
// and V apart, only where the kernel cannot be used (pools not 16-byte
// aligned) or is switched off (CudaIpcOptions).

// What a cudaStreamQuery or cudaEventQuery said: done, not yet, or an
// error. The runtime may keep what the query returned as the thread's last
// error, where a later launch check would find it, so it is cleared
// (cudaErrorNotReady is a state, not an error; a real one is reported here).
absl::StatusOr<bool> Done(cudaError_t q, const char* what) {
  if (q == cudaSuccess) return true;
  if (cudaPeekAtLastError() == q) cudaGetLastError();
  if (q == cudaErrorNotReady) return false;
  return CudaStatus(q, what);
}

absl::Status NotOnDevice(std::string_view side) {
  return absl::FailedPreconditionError(absl::StrCat("the CUDA IPC KV transport moves GPU memory only; ", std::string(side),
                                                    " KV pool is in host memory (use --transport=ucx or auto)"));
}

// The allocation containing `p`: cuMemGetAddressRange, reached through the
// runtime's driver entry point so that nothing links libcuda directly.
absl::Status AllocationRange(const void* p, uint64_t* base, uint64_t* size) {
  using GetAddressRange = CUresult (*)(CUdeviceptr*, size_t*, CUdeviceptr);
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
  TANDEM_CUDA_RETURN_IF_ERROR(
      cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &found));
  if (found != cudaDriverEntryPointSuccess || fn == nullptr) {
    return absl::InternalError("the CUDA driver has no cuMemGetAddressRange");
  }
  CUdeviceptr b = 0;
  size_t s = 0;
  const CUresult r = reinterpret_cast<GetAddressRange>(fn)(&b, &s, reinterpret_cast<CUdeviceptr>(p));
  if (r != CUDA_SUCCESS) return absl::InternalError(absl::StrCat("cuMemGetAddressRange: CUDA driver error ", r));
  *base = static_cast<uint64_t>(b);
  *size = static_cast<uint64_t>(s);
  return absl::OkStatus();
}

// A peer's pool allocation mapped into this process. Closed when the last
// transfer using it and the transport's cache have let go.
class IpcMapping {
 public:
  static absl::StatusOr<std::shared_ptr<IpcMapping>> Open(const v1::KvPoolDescriptor& dest, const CudaIpcExport& e,
                                                          int local_device) {
    auto m = std::shared_ptr<IpcMapping>(new IpcMapping());
    m->export_ = e;
    m->device_ = local_device;
    if (e.pid == static_cast<uint64_t>(getpid())) {
      // Our own pool (one process plays both roles): CUDA refuses to open
      // a handle in the process that made it, and the addresses are ours.
      m->base_ = reinterpret_cast<char*>(e.base);
      return m;
    }
    int peer_device = -1;
    if (cudaDeviceGetByPCIBusId(&peer_device, e.pci_bus_id.c_str()) != cudaSuccess) {
      cudaGetLastError();
      return absl::FailedPreconditionError(absl::StrCat("the GPU of decode worker ", dest.worker_id(), " (PCI ",
                                                        e.pci_bus_id, ") is not visible to this process "
                                                        "(CUDA_VISIBLE_DEVICES?)"));
    }
    if (peer_device != local_device) {
      int can = 0;
      TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceCanAccessPeer(&can, local_device, peer_device));
      if (!can) {
        return absl::FailedPreconditionError(absl::StrCat("GPU ", local_device, " cannot access GPU ", peer_device,
                                                          " of decode worker ", dest.worker_id(),
                                                          " (no peer access); use --transport=ucx"));
      }
    }
    cudaIpcMemHandle_t handle;
    std::memcpy(&handle, e.handle.data(), sizeof(handle));
    void* p = nullptr;
    const cudaError_t err = cudaIpcOpenMemHandle(&p, handle, cudaIpcMemLazyEnablePeerAccess);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return absl::UnavailableError(absl::StrCat("opening the CUDA IPC handle of decode worker ", dest.worker_id(),
                                                 ": ", cudaGetErrorString(err), " (has it exited?)"));
    }
    m->base_ = static_cast<char*>(p);
    m->opened_ = true;
    return m;
  }

  ~IpcMapping() {
    if (!opened_) return;
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(device_);
    const cudaError_t err = cudaIpcCloseMemHandle(base_);
    if (err != cudaSuccess) {
      TANDEM_LOG(WARNING) << "cudaIpcCloseMemHandle: " << cudaGetErrorString(err);
    }
  }

  char* base() const { return base_; }
  const CudaIpcExport& exported() const { return export_; }

 private:
  IpcMapping() = default;
  CudaIpcExport export_;
  int device_ = 0;
  char* base_ = nullptr;
  bool opened_ = false;
};

// One request's copies. Used by one thread (KvTransfer's contract): the
// pending layers, the parameters and the lane are touched only by the
// thread that calls SendLayer and Finish (and, last, the destructor).
//
// Launch policy (LaunchTiming, layer_batches.h): a SendLayer that comes in
// a burst of calls holds its layer; the call that ends the burst (the last
// layer, or one after a pause of LaunchTiming::kWindow) or Finish launches
// every held layer in one kernel. In the prefill worker the layers are a
// forward pass's layer apart (0.4-9 ms, far longer than a layer's copy), so
// every layer but the first (which goes out with the second) launches in
// its own hook and the copies overlap the compute layer by layer; a burst
// of SendLayer calls (the transfer bench, or layers sent after the pass)
// costs one launch. No SendLayer makes a CUDA call unless it launches.
// Layers may arrive in any order; a launch takes any list of layers.
class CudaIpcTransfer final : public KvTransfer {
 public:
  // A transfer whose deadline passed before it started: fails in Finish.
  static std::unique_ptr<CudaIpcTransfer> Late(KvPoolView& src, const v1::KvPoolDescriptor& dest,
                                               KvTransferSpec spec) {
    std::unique_ptr<CudaIpcTransfer> t(new CudaIpcTransfer(src, dest, std::move(spec)));
    t->result_ = MissedDeadline(t->Describe());
    return t;
  }

  // `lane` is idle and on the current device; `use_kernel` false forces the
  // cudaMemcpyAsync path (tests).
  static absl::StatusOr<std::unique_ptr<CudaIpcTransfer>> Create(KvPoolView& src, CudaCopyLaneLease lane,
                                                                 std::shared_ptr<IpcMapping> mapping,
                                                                 CudaIpcOffsets offsets,
                                                                 const v1::KvPoolDescriptor& dest,
                                                                 KvTransferSpec spec, bool use_kernel) {
    std::unique_ptr<CudaIpcTransfer> t(new CudaIpcTransfer(src, dest, std::move(spec)));
    // Owned from here on: any failure below still synchronizes the lane's
    // stream (the table upload) before the lane goes back.
    t->lane_ = std::move(lane);
    t->mapping_ = std::move(mapping);
    t->offsets_ = std::move(offsets);
    const int num_layers = t->num_layers_;
    const uint64_t stride = t->stride_;
    t->layers_.reserve(static_cast<size_t>(num_layers));
    for (int l = 0; l < num_layers; ++l) {
      const KvCopyParams::Layer bases{src.KeyBlock(l, 0), src.ValueBlock(l, 0), t->DstKey(l), t->DstValue(l)};
      use_kernel = use_kernel && KvBlockCopyAligned(bases.src_k, bases.src_v, bases.dst_k, bases.dst_v, stride);
      t->layers_.push_back(bases);
    }
    const std::vector<int32_t>& src_blocks = t->spec_.src_blocks;
    const std::vector<int32_t>& dst_blocks = t->spec_.dst_blocks;
    t->use_kernel_ = use_kernel;
    if (!use_kernel) {
      t->runs_ = PlanBlockRuns(src_blocks, dst_blocks);
      return t;
    }
    KvCopyParams& p = t->params_;
    p.block_bytes = stride;
    p.num_pairs = static_cast<int32_t>(src_blocks.size());
    p.num_layers = 0;
    p.table = nullptr;
    if (src_blocks.size() <= static_cast<size_t>(kKvCopyInlinePairs)) {
      // Short prompts (up to 4k tokens in 16-token blocks): the table rides
      // in every launch's parameters, nothing to upload.
      for (size_t i = 0; i < src_blocks.size(); ++i) {
        p.pairs[2 * i] = src_blocks[i];
        p.pairs[2 * i + 1] = dst_blocks[i];
      }
    } else {
      // Queued on the lane's stream ahead of every launch of this transfer.
      TANDEM_ASSIGN_OR_RETURN(p.table, t->lane_->UploadTable(src_blocks, dst_blocks));
    }
    return t;
  }

  ~CudaIpcTransfer() override {
    if (!lane_) return;
    // Copies still queued read source blocks the prefill worker frees next
    // and write blocks the decode worker reuses once this transfer failed:
    // they must be over before either happens, and before the lane (its
    // stream and table buffers) serves another transfer. Layers still
    // pending were never launched and now never will be. Local copies
    // always end. After a Finish that succeeded the stream is idle and
    // this returns at once.
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(lane_->device());
    const cudaError_t err = cudaStreamSynchronize(lane_->stream());
    if (err != cudaSuccess) {
      TANDEM_LOG(WARNING) << Describe() << ": " << cudaGetErrorString(err);
      lane_.Discard();  // not known to be idle: not handed to another transfer
    }
  }

  absl::Status SendLayer(int layer) override {
    TANDEM_RETURN_IF_ERROR(CheckStillSending(Describe(), result_));
    TANDEM_RETURN_IF_ERROR(CheckLayer(Describe(), layer, num_layers_));
    if (PastDeadline(spec_)) return Expire();
    pending_.Add(layer);
    // Held: goes out with a later layer, or with Finish.
    if (!timing_.Sent(layer, LaunchTiming::Clock::now())) return absl::OkStatus();
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(lane_->device());
    if (!scope.ok()) return FailAfterCopies(scope.status());
    if (absl::Status s = LaunchPending(); !s.ok()) return FailAfterCopies(std::move(s));
    return absl::OkStatus();
  }

  absl::Status Finish() override {
    if (result_.has_value()) return *result_;
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(lane_->device());
    if (!scope.ok()) return FailAfterCopies(scope.status());
    if (PastDeadline(spec_)) return Expire();
    if (absl::Status s = LaunchPending(); !s.ok()) return FailAfterCopies(std::move(s));
    // The decode worker's signal: the lane's interprocess event, after the
    // last copy (handed over by completion()).
    if (const cudaError_t e = cudaEventRecord(lane_->done(), lane_->stream()); e != cudaSuccess) {
      return FailAfterCopies(CudaStatus(e, "recording the KV transfer's completion event"));
    }
    // The lane's stream carries this transfer's copies and nothing else, so
    // it is idle exactly when they (and the record) are done: polled
    // directly. Polled rather than synchronized: a blocking wait cannot
    // honour the deadline. Polled until the deadline or the finish
    // timeout, whichever comes first (FinishDeadline); past it the copies
    // already queued are still waited for before the failure is reported
    // (FailAfterCopies): they cannot be recalled, but always end.
    bool by_timeout = false;
    const absl::Time until = FinishDeadline(spec_, absl::Now(), &by_timeout);
    const PollBackoff backoff;
    while (true) {
      absl::StatusOr<bool> idle = Done(cudaStreamQuery(lane_->stream()), "KV copy");
      if (!idle.ok()) return Fail(idle.status());
      if (*idle) break;
      if (absl::Now() > until) return FailAfterCopies(FinishExpired(spec_, by_timeout, Describe()));
      backoff.Wait();
    }
    result_ = absl::OkStatus();
    return absl::OkStatus();
  }

  // The lane's record: its event was recorded behind this transfer's copies.
  std::string completion() const override {
    return result_.has_value() && result_->ok() ? lane_->completion_record() : std::string();
  }
  int64_t bytes_sent() const override { return bytes_; }
  const std::string& id() const override { return spec_.transfer_id; }
  std::string_view transport() const override { return kTransportCudaIpc; }

 private:
  CudaIpcTransfer(KvPoolView& src, const v1::KvPoolDescriptor& dest, KvTransferSpec spec)
      : src_(src),
        spec_(std::move(spec)),
        worker_id_(dest.worker_id()),
        num_layers_(dest.key_base_size()),
        stride_(dest.block_stride()),
        pending_(num_layers_),
        timing_(num_layers_, LaunchTiming::Clock::now()) {}
  std::string Describe() const {
    return absl::StrCat("KV transfer ", spec_.transfer_id, " to decode worker ", worker_id_, " (CUDA IPC)");
  }
  char* DstKey(int layer) const { return mapping_->base() + offsets_.key[static_cast<size_t>(layer)]; }
  char* DstValue(int layer) const { return mapping_->base() + offsets_.value[static_cast<size_t>(layer)]; }

  // Past the deadline the decode worker may give the blocks to another
  // request once it hears of the failure (its reservation is not this
  // transport's write gate: the copies are ours). So nothing more is
  // launched (pending layers stay unsent), and the copies already queued,
  // which cannot be recalled but always end, are waited for first.
  absl::Status Expire() { return FailAfterCopies(MissedDeadline(Describe())); }

  // Every failure once copies may be queued: before it is reported (the
  // decode worker may reuse the blocks then), waits for what was launched.
  // The destructor waits too; this makes the failure itself mean "nothing
  // of it still runs". (A stream is synchronized whichever device is
  // current.)
  absl::Status FailAfterCopies(absl::Status s) {
    if (const cudaError_t e = cudaStreamSynchronize(lane_->stream()); e != cudaSuccess) {
      TANDEM_LOG(WARNING) << Describe() << ": waiting for the copies: " << cudaGetErrorString(e);
    }
    return Fail(std::move(s));
  }

  // Launches every pending layer: one kernel per kKvCopyMaxLayers of them,
  // or one cudaMemcpyAsync per run, K and V apart, without the kernel.
  absl::Status LaunchPending() {
    const int64_t layer_bytes = 2 * static_cast<int64_t>(spec_.src_blocks.size() * stride_);
    for (const std::vector<int32_t>& group : pending_.Take(kKvCopyMaxLayers)) {
      if (use_kernel_) {
        params_.num_layers = static_cast<int32_t>(group.size());
        for (size_t i = 0; i < group.size(); ++i) params_.layers[i] = layers_[static_cast<size_t>(group[i])];
        TANDEM_CUDA_RETURN_IF_ERROR(LaunchKvCopy(params_, lane_->max_ctas(), lane_->stream()));
      } else {
        for (const int32_t layer : group) {
          for (const BlockRun& r : runs_) {
            const size_t bytes = static_cast<size_t>(r.count) * stride_;
            TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(DstKey(layer) + r.dst * stride_, src_.KeyBlock(layer, r.src),
                                                        bytes, cudaMemcpyDefault, lane_->stream()));
            TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(DstValue(layer) + r.dst * stride_,
                                                        src_.ValueBlock(layer, r.src), bytes, cudaMemcpyDefault,
                                                        lane_->stream()));
          }
        }
      }
      bytes_ += static_cast<int64_t>(group.size()) * layer_bytes;
    }
    return absl::OkStatus();
  }

  absl::Status Fail(absl::Status s) {
    result_ = s;
    return s;
  }

  KvPoolView& src_;
  KvTransferSpec spec_;
  // Of the destination descriptor, what the copies and messages need (the
  // descriptor itself is not kept: copying it costs a dozen allocations).
  std::string worker_id_;
  int num_layers_;
  uint64_t stride_;
  std::shared_ptr<IpcMapping> mapping_;
  CudaIpcOffsets offsets_;
  std::vector<KvCopyParams::Layer> layers_;  // per layer: source and destination K/V bases
  bool use_kernel_ = false;
  KvCopyParams params_{};                    // kernel path: the pairs (or table) once, layers per launch
  std::vector<BlockRun> runs_;               // cudaMemcpyAsync path
  PendingLayers pending_;
  LaunchTiming timing_;
  int64_t bytes_ = 0;
  std::optional<absl::Status> result_;
  // Last: released first, after the destructor synchronized its stream.
  CudaCopyLaneLease lane_;
};

class CudaIpcTransport final : public KvTransport, private KvReceiver {
 public:
  explicit CudaIpcTransport(CudaIpcOptions options) : options_(options) {}
  std::string_view name() const override { return kTransportCudaIpc; }

  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override {
    if (!pool.on_device()) return NotOnDevice("this");
    TANDEM_RETURN_IF_ERROR(CheckExportablePool(pool, kTransportCudaIpc));
    TANDEM_ASSIGN_OR_RETURN(int device, DeviceOfPointer(pool.KeyBlock(0, 0)));
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    exported_device_.store(device);
    CudaIpcExport e;
    TANDEM_RETURN_IF_ERROR(AllocationRange(pool.KeyBlock(0, 0), &e.base, &e.size));
    cudaIpcMemHandle_t handle;
    TANDEM_CUDA_RETURN_IF_ERROR(cudaIpcGetMemHandle(&handle, reinterpret_cast<void*>(e.base)));
    e.handle.assign(reinterpret_cast<const char*>(&handle), sizeof(handle));
    char bus[64] = {};
    TANDEM_CUDA_RETURN_IF_ERROR(cudaDeviceGetPCIBusId(bus, sizeof(bus), device));
    e.pci_bus_id = bus;
    e.pid = static_cast<uint64_t>(getpid());
    v1::KvPoolDescriptor d = DescribePool(pool, self, kTransportCudaIpc);
    d.set_endpoint(LocalHostId());
    d.set_remote_key(EncodeCudaIpcExport(e));
    // Every layer's arrays must be inside the one allocation the handle
    // covers (CudaKvPool's invariant); refuse a pool that breaks it here
    // rather than on every prefill worker.
    absl::StatusOr<CudaIpcOffsets> offsets = ComputeCudaIpcOffsets(d, e);
    if (!offsets.ok()) {
      return absl::FailedPreconditionError(absl::StrCat("the KV pool is not one CUDA allocation, so one IPC handle "
                                                        "cannot export it: ", offsets.status().message()));
    }
    TANDEM_LOG(INFO) << "KV pool exported over CUDA IPC: GPU " << device << " (PCI " << e.pci_bus_id << "), "
                     << (e.size >> 20) << " MiB";
    return d;
  }

  absl::StatusOr<std::unique_ptr<KvTransfer>> StartTransfer(KvPoolView& pool, const KvEndpointInfo& self,
                                                            const v1::KvPoolDescriptor& dest,
                                                            KvTransferSpec spec) override {
    TANDEM_RETURN_IF_ERROR(CheckDescriptorTransport(dest, kTransportCudaIpc));
    TANDEM_ASSIGN_OR_RETURN(CudaIpcExport e, DecodeCudaIpcExport(dest.remote_key(), dest.worker_id()));
    TANDEM_RETURN_IF_ERROR(CheckSameHost(dest, LocalHostId()));
    if (!pool.on_device()) return NotOnDevice("this prefill worker's");
    TANDEM_RETURN_IF_ERROR(CheckTransfer(self, pool, dest, spec));
    TANDEM_ASSIGN_OR_RETURN(CudaIpcOffsets offsets, ComputeCudaIpcOffsets(dest, e));
    if (PastDeadline(spec)) return std::unique_ptr<KvTransfer>(CudaIpcTransfer::Late(pool, dest, std::move(spec)));
    TANDEM_ASSIGN_OR_RETURN(int device, DeviceOfPointer(pool.KeyBlock(0, 0)));
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<IpcMapping> mapping, Connect(dest, e, device));
    TANDEM_ASSIGN_OR_RETURN(CudaCopyLaneLease lane, lanes_->Acquire(device));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CudaIpcTransfer> t,
                            CudaIpcTransfer::Create(pool, std::move(lane), std::move(mapping), std::move(offsets),
                                                    dest, std::move(spec), options_.gather_kernel));
    return std::unique_ptr<KvTransfer>(std::move(t));
  }

  // Decode side: itself, for WaitReceived (below).
  KvReceiver* receiver() override { return this; }

  void Disconnect(std::string_view worker_id) override {
    std::shared_ptr<IpcMapping> dropped;  // closed outside the lock
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(std::string(worker_id));
    if (it == peers_.end()) return;
    dropped = std::move(it->second);
    peers_.erase(it);
  }

 private:
  // KvReceiver. The copies are the sender's: no write of ours passes a
  // gate, and nothing is announced.
  void SetWriteGate(KvWriteGate*) override {}
  absl::Status AcceptAnnouncedTransfer(const v1::NcclTransferRequest&, const std::vector<int32_t>&,
                                       ReceiveFailed) override {
    return NoAnnouncedTransfers(name());
  }

  // Waits for the interprocess event the prefill worker
  // recorded after its copies. The router asks for Decode only after the
  // prefill worker's Finish saw them done, so the event has normally fired
  // already and this returns at once; it is the GPU's own word that the
  // blocks are written, taken before they are adopted.
  absl::Status WaitReceived(std::string_view transfer_id, std::string_view completion,
                            absl::Time deadline) override {
    if (completion.empty()) return absl::OkStatus();
    TANDEM_ASSIGN_OR_RETURN(CudaIpcCompletion c, DecodeCudaIpcCompletion(completion, transfer_id));
    // Our own copies (one process in both roles): an event handle does not
    // open in the process that made it, and our Finish already saw them done.
    if (c.pid == static_cast<uint64_t>(getpid())) return absl::OkStatus();
    const int device = exported_device_.load();
    if (device < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("KV transfer ", std::string(transfer_id), " came over CUDA IPC, but this worker exported no GPU pool"));
    }
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    absl::StatusOr<std::shared_ptr<CudaEvent>> ev = OpenedEvent(c);
    if (!ev.ok()) {
      // A prefill worker that exited after its response (a drain) takes its
      // event with it; its Finish had seen the copies done before it answered.
      if (kill(static_cast<pid_t>(c.pid), 0) != 0 && errno == ESRCH) {
        TANDEM_LOG(WARNING) << "KV transfer " << transfer_id << ": the completion event of prefill process " << c.pid
                            << " is gone with it (" << ev.status().message() << "); its copies had ended";
        return absl::OkStatus();
      }
      return absl::UnavailableError(absl::StrCat("KV transfer ", std::string(transfer_id),
                                                 ": opening the prefill worker's completion event: ",
                                                 ev.status().message()));
    }
    const PollBackoff backoff;
    while (true) {
      TANDEM_ASSIGN_OR_RETURN(const bool done, Done(cudaEventQuery((*ev)->get()), "the KV transfer's completion event"));
      if (done) return absl::OkStatus();
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat("KV transfer ", std::string(transfer_id), ": its CUDA IPC copies have not completed"));
      }
      backoff.Wait();
    }
  }

  // The cached mapping of `dest`'s pool, or a new one when there is none
  // or the peer restarted (a different handle or process).
  absl::StatusOr<std::shared_ptr<IpcMapping>> Connect(const v1::KvPoolDescriptor& dest, const CudaIpcExport& e,
                                                      int device) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(dest.worker_id());
    if (it != peers_.end() && it->second->exported() == e) return it->second;
    if (it != peers_.end()) peers_.erase(it);
    TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<IpcMapping> m, IpcMapping::Open(dest, e, device));
    TANDEM_LOG(INFO) << "opened the CUDA IPC KV pool of decode worker " << dest.worker_id() << " (PCI "
                     << e.pci_bus_id << ") on GPU " << device;
    peers_[dest.worker_id()] = m;
    return m;
  }

  // The opened event of a completion record (cached by handle: a prefill
  // worker's lanes, and so its events, are few and reused). Shared so that
  // a waiter keeps its event while the cache is cleared.
  absl::StatusOr<std::shared_ptr<CudaEvent>> OpenedEvent(const CudaIpcCompletion& c) {
    const std::string key = absl::StrCat(c.pid, ":", c.event_handle);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = events_.find(key);
      if (it != events_.end()) return it->second;
    }
    cudaIpcEventHandle_t handle;
    std::memcpy(&handle, c.event_handle.data(), sizeof(handle));
    TANDEM_ASSIGN_OR_RETURN(CudaEvent opened, CudaEvent::OpenIpc(handle));
    auto ev = std::make_shared<CudaEvent>(std::move(opened));
    std::vector<std::shared_ptr<CudaEvent>> dropped;  // destroyed outside the lock
    std::lock_guard<std::mutex> lock(mu_);
    if (events_.size() >= kMaxOpenedEvents) {
      for (auto& [k, v] : events_) dropped.push_back(std::move(v));
      events_.clear();  // prefill workers come and go; the live ones reopen theirs
    }
    events_.emplace(key, ev);
    TANDEM_LOG(INFO) << "opened a CUDA IPC completion event of prefill process " << c.pid << " (" << events_.size()
                     << " open): KV transfers are waited for on it before their blocks are adopted";
    return ev;
  }

  static constexpr size_t kMaxOpenedEvents = 256;
  const CudaIpcOptions options_;
  // Streams, events and table buffers, reused transfer after transfer
  // (shared with the transfers holding one, which may outlive this).
  const std::shared_ptr<CudaCopyLanePool> lanes_ = CudaCopyLanePool::Create();
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<IpcMapping>> peers_;
  std::unordered_map<std::string, std::shared_ptr<CudaEvent>> events_;  // decode side
  std::atomic<int> exported_device_{-1};  // the exported pool's GPU (decode side)
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransport>> MakeCudaIpcTransport(CudaIpcOptions options) {
  return std::unique_ptr<KvTransport>(new CudaIpcTransport(options));
}

}  // namespace tandem
