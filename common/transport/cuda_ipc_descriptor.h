// What a CUDA IPC-exported pool publishes (plain C++, no CUDA headers, so
// it is built and tested everywhere). In the KvPoolDescriptor:
//
//   transport  "cuda_ipc"
//   endpoint   the exporter's host id (host_id.h): IPC handles open only
//              on the host that made them
//   remote_key EncodeCudaIpcExport: the cudaIpcMemHandle_t of the pool's
//              one allocation, that allocation's base address and size in
//              the exporter's address space, the exporter's GPU (PCI bus
//              id) and process id
//
// The per-layer key_base/value_base addresses stay in the exporter's
// address space; an importer maps the allocation at an address of its own
// and adds each array's offset from the allocation base.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tandem/v1/worker.pb.h"

namespace tandem {

// sizeof(cudaIpcMemHandle_t) (CUDA_IPC_HANDLE_SIZE).
inline constexpr size_t kCudaIpcHandleBytes = 64;

struct CudaIpcExport {
  std::string handle;  // kCudaIpcHandleBytes opaque bytes
  uint64_t base = 0;   // allocation base, exporter's address space
  uint64_t size = 0;   // allocation bytes
  std::string pci_bus_id;
  uint64_t pid = 0;
  bool operator==(const CudaIpcExport&) const = default;
};

std::string EncodeCudaIpcExport(const CudaIpcExport& e);
// INVALID_ARGUMENT naming `owner` when malformed.
absl::StatusOr<CudaIpcExport> DecodeCudaIpcExport(std::string_view bytes, std::string_view owner);

// What a CUDA IPC transfer hands the decode worker when it is done
// (PrefillResponse.kv_completion, relayed by the router in
// DecodeRequest.kv_completion): the interprocess event the prefill worker
// recorded on its copy stream after the transfer's last copy
// (cudaIpcEventHandle_t), and that process's id. The decode worker's
// WaitReceived opens the event and waits for it before it adopts the blocks.
struct CudaIpcCompletion {
  std::string event_handle;  // kCudaIpcHandleBytes opaque bytes
  uint64_t pid = 0;
  bool operator==(const CudaIpcCompletion&) const = default;
};

std::string EncodeCudaIpcCompletion(const CudaIpcCompletion& c);
// INVALID_ARGUMENT naming `transfer_id` when malformed.
absl::StatusOr<CudaIpcCompletion> DecodeCudaIpcCompletion(std::string_view bytes, std::string_view transfer_id);

// FAILED_PRECONDITION unless the descriptor's endpoint (the exporter's host
// id) is `local_host_id`.
absl::Status CheckSameHost(const v1::KvPoolDescriptor& d, std::string_view local_host_id);

// Offsets from the allocation base of each layer's K and V array (block 0),
// after checking that every array, num_blocks * block_stride bytes, lies
// inside the exported allocation (INVALID_ARGUMENT otherwise).
struct CudaIpcOffsets {
  std::vector<uint64_t> key;
  std::vector<uint64_t> value;
};
absl::StatusOr<CudaIpcOffsets> ComputeCudaIpcOffsets(const v1::KvPoolDescriptor& d, const CudaIpcExport& e);

}  // namespace tandem
