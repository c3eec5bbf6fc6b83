#include "common/transport/cuda_ipc_descriptor.h"

#include "absl/strings/str_cat.h"
#include "common/transport/wire_codec.h"

namespace tandem {
namespace {

constexpr uint32_t kMagic = 0x31495054;            // "TPI1"
constexpr uint32_t kCompletionMagic = 0x31455054;  // "TPE1"

}  // namespace

std::string EncodeCudaIpcExport(const CudaIpcExport& e) {
  wire::Writer w;
  w.U32(kMagic);
  w.Bytes(e.handle);
  w.U64(e.base);
  w.U64(e.size);
  w.Bytes(e.pci_bus_id);
  w.U64(e.pid);
  return std::move(w.str());
}

absl::StatusOr<CudaIpcExport> DecodeCudaIpcExport(std::string_view bytes, std::string_view owner) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA IPC export of decode worker ", std::string(owner), " is malformed: ", std::string(why)));
  };
  wire::Reader r(bytes);
  CudaIpcExport e;
  uint32_t magic = 0;
  if (!r.U32(&magic) || magic != kMagic) return bad("not a CUDA IPC export record");
  if (!r.Bytes(&e.handle, 1024) || !r.U64(&e.base) || !r.U64(&e.size) || !r.Bytes(&e.pci_bus_id, 256) ||
      !r.U64(&e.pid)) {
    return bad("truncated");
  }
  if (!r.done()) return bad(absl::StrCat(r.remaining(), " trailing bytes"));
  if (e.handle.size() != kCudaIpcHandleBytes) {
    return bad(absl::StrCat("the IPC handle has ", e.handle.size(), " bytes, not ", kCudaIpcHandleBytes));
  }
  if (e.size == 0 || e.base + e.size < e.base) return bad("empty or wrapping allocation");
  return e;
}

std::string EncodeCudaIpcCompletion(const CudaIpcCompletion& c) {
  wire::Writer w;
  w.U32(kCompletionMagic);
  w.Bytes(c.event_handle);
  w.U64(c.pid);
  return std::move(w.str());
}

absl::StatusOr<CudaIpcCompletion> DecodeCudaIpcCompletion(std::string_view bytes, std::string_view transfer_id) {
  auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("the CUDA IPC completion of KV transfer ", std::string(transfer_id),
                                                   " is malformed: ", std::string(why)));
  };
  wire::Reader r(bytes);
  CudaIpcCompletion c;
  uint32_t magic = 0;
  if (!r.U32(&magic) || magic != kCompletionMagic) return bad("not a CUDA IPC completion record");
  if (!r.Bytes(&c.event_handle, 1024) || !r.U64(&c.pid)) return bad("truncated");
  if (!r.done()) return bad(absl::StrCat(r.remaining(), " trailing bytes"));
  if (c.event_handle.size() != kCudaIpcHandleBytes) {
    return bad(absl::StrCat("the event handle has ", c.event_handle.size(), " bytes, not ", kCudaIpcHandleBytes));
  }
  return c;
}

absl::Status CheckSameHost(const v1::KvPoolDescriptor& d, std::string_view local_host_id) {
  if (d.endpoint() == local_host_id) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "decode worker ", d.worker_id(), " is on another host (host id '", d.endpoint(), "', ours '", std::string(local_host_id),
      "'): CUDA IPC works only between processes of one host; use --transport=auto or ucx"));
}

absl::StatusOr<CudaIpcOffsets> ComputeCudaIpcOffsets(const v1::KvPoolDescriptor& d, const CudaIpcExport& e) {
  const uint64_t array_bytes = static_cast<uint64_t>(d.num_blocks()) * d.block_stride();
  if (d.num_blocks() <= 0 || d.block_stride() == 0 || array_bytes / d.block_stride() != static_cast<uint64_t>(d.num_blocks())) {
    return absl::InvalidArgumentError(absl::StrCat("pool descriptor of ", d.worker_id(), " has ", d.num_blocks(),
                                                   " blocks of ", d.block_stride(), " bytes"));
  }
  if (d.key_base_size() != d.value_base_size()) {
    return absl::InvalidArgumentError(absl::StrCat("pool descriptor of ", d.worker_id(), " has ", d.key_base_size(),
                                                   " key and ", d.value_base_size(), " value bases"));
  }
  auto offset = [&](uint64_t address, int layer, const char* kv) -> absl::StatusOr<uint64_t> {
    if (address < e.base || address - e.base > e.size || e.size - (address - e.base) < array_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("pool descriptor of ", d.worker_id(), ": layer ", layer, "'s ",
                                                     kv, " array [", address, ", +", array_bytes,
                                                     ") is outside the exported allocation [", e.base, ", +", e.size,
                                                     ")"));
    }
    return address - e.base;
  };
  CudaIpcOffsets o;
  o.key.reserve(static_cast<size_t>(d.key_base_size()));
  o.value.reserve(static_cast<size_t>(d.value_base_size()));
  for (int l = 0; l < d.key_base_size(); ++l) {
    absl::StatusOr<uint64_t> k = offset(d.key_base(l), l, "K");
    if (!k.ok()) return k.status();
    absl::StatusOr<uint64_t> v = offset(d.value_base(l), l, "V");
    if (!v.ok()) return v.status();
    o.key.push_back(*k);
    o.value.push_back(*v);
  }
  return o;
}

}  // namespace tandem
