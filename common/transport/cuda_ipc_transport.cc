#include "common/transport/cuda_ipc_transport.h"

#include <cuda.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/transport/block_runs.h"
#include "common/transport/cuda_block_copy.h"
#include "common/transport/cuda_handles.h"
#include "common/transport/cuda_ipc_descriptor.h"
#include "common/transport/host_id.h"
#include "common/transport/transport_selection.h"
#include "common/util/logging.h"
#include "common/util/status_macros.h"

namespace tandem {
namespace {

// A layer's K and V blocks go through one gather kernel (one launch for
// all runs, K and V together: each cudaMemcpyAsync costs a few
// microseconds, a scattered 8k-token prompt has hundreds of runs, and even
// one run per layer means two copies per layer); one cudaMemcpyAsync per
// run and K/V only where the kernel cannot be used.

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

class CudaIpcTransfer final : public KvTransfer {
 public:
  // A transfer whose deadline passed before it started: fails in Finish.
  static std::unique_ptr<CudaIpcTransfer> Late(KvPoolView& src, v1::KvPoolDescriptor dest, KvTransferSpec spec) {
    std::unique_ptr<CudaIpcTransfer> t(new CudaIpcTransfer(src, std::move(spec)));
    t->dest_ = std::move(dest);
    t->result_ = absl::DeadlineExceededError(absl::StrCat(t->Describe(), " missed its deadline"));
    return t;
  }

  static absl::StatusOr<std::unique_ptr<CudaIpcTransfer>> Create(KvPoolView& src, int device,
                                                                 std::shared_ptr<IpcMapping> mapping,
                                                                 CudaIpcOffsets offsets, v1::KvPoolDescriptor dest,
                                                                 KvTransferSpec spec) {
    std::unique_ptr<CudaIpcTransfer> t(new CudaIpcTransfer(src, std::move(spec)));
    t->device_ = device;
    t->mapping_ = std::move(mapping);
    t->offsets_ = std::move(offsets);
    t->dest_ = std::move(dest);
    t->runs_ = PlanBlockRuns(t->spec_.src_blocks, t->spec_.dst_blocks);
    TANDEM_ASSIGN_OR_RETURN(t->stream_, CudaStream::Create());
    TANDEM_ASSIGN_OR_RETURN(t->done_, CudaEvent::Create(cudaEventInterprocess));
    const uint64_t stride = t->dest_.block_stride();
    t->use_kernel_ = KvBlockCopyAligned(src.KeyBlock(0, 0), src.ValueBlock(0, 0), t->DstKey(0), t->DstValue(0),
                                        stride);
    if (t->use_kernel_) {
      // The (src, dst) table, uploaded once for all layers. Stream-ordered
      // allocation: no device-wide synchronization as with cudaMalloc.
      for (size_t i = 0; i < t->spec_.src_blocks.size(); ++i) {
        t->table_host_.push_back(t->spec_.src_blocks[i]);
        t->table_host_.push_back(t->spec_.dst_blocks[i]);
      }
      const size_t bytes = t->table_host_.size() * sizeof(int32_t);
      void* table = nullptr;
      if (cudaMallocAsync(&table, bytes, t->stream_.get()) != cudaSuccess) {
        // No stream-ordered allocator (an old driver or MIG setting): one
        // copy per run instead, slower for scattered blocks but correct.
        cudaGetLastError();
        t->use_kernel_ = false;
      } else {
        t->table_ = static_cast<int32_t*>(table);
        TANDEM_CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(table, t->table_host_.data(), bytes, cudaMemcpyHostToDevice, t->stream_.get()));
      }
    }
    return t;
  }

  ~CudaIpcTransfer() override {
    if (stream_.get() == nullptr) return;
    // Copies still queued read source blocks the prefill worker frees next
    // and write blocks the decode worker reuses once this transfer failed:
    // they must be over before either happens. Local copies always end.
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(device_);
    if (table_ != nullptr) cudaFreeAsync(table_, stream_.get());
    const cudaError_t err = cudaStreamSynchronize(stream_.get());
    if (err != cudaSuccess) {
      TANDEM_LOG(WARNING) << Describe() << ": " << cudaGetErrorString(err);
    }
  }

  absl::Status SendLayer(int layer) override {
    if (result_.has_value()) {
      return result_->ok() ? absl::FailedPreconditionError(absl::StrCat(Describe(), ": SendLayer after Finish"))
                           : *result_;
    }
    if (layer < 0 || layer >= dest_.key_base_size()) {
      return absl::InvalidArgumentError(absl::StrCat(Describe(), ": layer ", layer, " out of range"));
    }
    absl::Status s = Enqueue(layer);
    if (!s.ok()) return Fail(std::move(s));
    return absl::OkStatus();
  }

  absl::Status Finish() override {
    if (result_.has_value()) return *result_;
    absl::StatusOr<CudaDeviceScope> scope = CudaDeviceScope::Enter(device_);
    if (!scope.ok()) return Fail(scope.status());
    cudaError_t err = cudaEventRecord(done_.get(), stream_.get());
    if (err != cudaSuccess) return Fail(CudaStatus(err, "cudaEventRecord(transfer done)"));
    // Poll rather than block: a blocking wait cannot honour the deadline.
    int rounds = 0;
    while ((err = cudaEventQuery(done_.get())) == cudaErrorNotReady) {
      if (absl::Now() > spec_.deadline) {
        // The failure lets the decode worker hand the blocks to another
        // request: the copies still queued must be over first (they cannot
        // be recalled, and local copies always end).
        if (const cudaError_t e = cudaEventSynchronize(done_.get()); e != cudaSuccess) {
          TANDEM_LOG(WARNING) << Describe() << ": waiting for the copies: " << cudaGetErrorString(e);
        }
        return Fail(absl::DeadlineExceededError(absl::StrCat(Describe(), " missed its deadline")));
      }
      if (++rounds > 200) {
        std::this_thread::sleep_for(std::chrono::microseconds(20));
      } else {
        std::this_thread::yield();
      }
    }
    if (err != cudaSuccess) return Fail(CudaStatus(err, "KV copy"));
    result_ = absl::OkStatus();
    return absl::OkStatus();
  }

  int64_t bytes_sent() const override { return bytes_; }
  const std::string& id() const override { return spec_.transfer_id; }
  std::string_view transport() const override { return kTransportCudaIpc; }

 private:
  CudaIpcTransfer(KvPoolView& src, KvTransferSpec spec) : src_(src), spec_(std::move(spec)) {}
  std::string Describe() const {
    return absl::StrCat("KV transfer ", spec_.transfer_id, " to decode worker ", dest_.worker_id(), " (CUDA IPC)");
  }
  char* DstKey(int layer) const { return mapping_->base() + offsets_.key[layer]; }
  char* DstValue(int layer) const { return mapping_->base() + offsets_.value[layer]; }

  absl::Status Enqueue(int layer) {
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device_));
    const uint64_t stride = dest_.block_stride();
    if (use_kernel_) {
      TANDEM_CUDA_RETURN_IF_ERROR(LaunchKvBlockCopy(table_, static_cast<int32_t>(spec_.src_blocks.size()),
                                                    src_.KeyBlock(layer, 0), src_.ValueBlock(layer, 0),
                                                    DstKey(layer), DstValue(layer), stride, stream_.get()));
    } else {
      for (const BlockRun& r : runs_) {
        const size_t bytes = static_cast<size_t>(r.count) * stride;
        TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(DstKey(layer) + r.dst * stride, src_.KeyBlock(layer, r.src), bytes,
                                                    cudaMemcpyDefault, stream_.get()));
        TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(DstValue(layer) + r.dst * stride, src_.ValueBlock(layer, r.src),
                                                    bytes, cudaMemcpyDefault, stream_.get()));
      }
    }
    bytes_ += 2 * static_cast<int64_t>(spec_.src_blocks.size() * stride);
    return absl::OkStatus();
  }

  absl::Status Fail(absl::Status s) {
    result_ = s;
    return s;
  }

  KvPoolView& src_;
  KvTransferSpec spec_;
  int device_ = 0;
  std::shared_ptr<IpcMapping> mapping_;
  CudaIpcOffsets offsets_;
  v1::KvPoolDescriptor dest_;
  std::vector<BlockRun> runs_;
  bool use_kernel_ = false;
  std::vector<int32_t> table_host_;
  int32_t* table_ = nullptr;  // stream-ordered allocation, freed on the stream
  CudaStream stream_;         // declared after table_: destroyed first, after the sync in the destructor
  CudaEvent done_;
  int64_t bytes_ = 0;
  std::optional<absl::Status> result_;
};

class CudaIpcTransport final : public KvTransport {
 public:
  std::string_view name() const override { return kTransportCudaIpc; }

  absl::StatusOr<v1::KvPoolDescriptor> ExportPool(KvPoolView& pool, const KvEndpointInfo& self) override {
    if (!pool.on_device()) return NotOnDevice("this");
    if (pool.layout().num_layers <= 0 || pool.num_blocks() <= 0) {
      return absl::InvalidArgumentError("cannot export an empty KV pool");
    }
    TANDEM_ASSIGN_OR_RETURN(int device, DeviceOfPointer(pool.KeyBlock(0, 0)));
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
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
    if (dest.transport() != kTransportCudaIpc) {
      return absl::FailedPreconditionError(absl::StrCat("decode worker ", dest.worker_id(),
                                                        " exported its KV pool over '", dest.transport(),
                                                        "', not cuda_ipc"));
    }
    TANDEM_ASSIGN_OR_RETURN(CudaIpcExport e, DecodeCudaIpcExport(dest.remote_key(), dest.worker_id()));
    TANDEM_RETURN_IF_ERROR(CheckSameHost(dest, LocalHostId()));
    if (!pool.on_device()) return NotOnDevice("this prefill worker's");
    TANDEM_RETURN_IF_ERROR(CheckTransfer(self, pool, dest, spec));
    TANDEM_ASSIGN_OR_RETURN(CudaIpcOffsets offsets, ComputeCudaIpcOffsets(dest, e));
    if (absl::Now() > spec.deadline) return std::unique_ptr<KvTransfer>(CudaIpcTransfer::Late(pool, dest, std::move(spec)));
    TANDEM_ASSIGN_OR_RETURN(int device, DeviceOfPointer(pool.KeyBlock(0, 0)));
    TANDEM_ASSIGN_OR_RETURN(CudaDeviceScope scope, CudaDeviceScope::Enter(device));
    TANDEM_ASSIGN_OR_RETURN(std::shared_ptr<IpcMapping> mapping, Connect(dest, e, device));
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<CudaIpcTransfer> t,
                            CudaIpcTransfer::Create(pool, device, std::move(mapping), std::move(offsets), dest,
                                                    std::move(spec)));
    return std::unique_ptr<KvTransfer>(std::move(t));
  }

  void Disconnect(std::string_view worker_id) override {
    std::shared_ptr<IpcMapping> dropped;  // closed outside the lock
    std::lock_guard<std::mutex> lock(mu_);
    auto it = peers_.find(std::string(worker_id));
    if (it == peers_.end()) return;
    dropped = std::move(it->second);
    peers_.erase(it);
  }

 private:
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

  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<IpcMapping>> peers_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvTransport>> MakeCudaIpcTransport() {
  return std::unique_ptr<KvTransport>(new CudaIpcTransport());
}

}  // namespace tandem
