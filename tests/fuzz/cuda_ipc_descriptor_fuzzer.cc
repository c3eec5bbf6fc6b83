// A CUDA IPC offer as a prefill worker receives it: DecodeCudaIpcExport on
// the remote key (must re-encode to the same bytes; so must the same bytes
// read as a transfer's completion record, DecodeCudaIpcCompletion), then CheckSameHost and
// ComputeCudaIpcOffsets against a parsed KvPoolDescriptor, whose accepted
// offsets must keep every layer's arrays inside the exported allocation.
#include <algorithm>
#include <cstdlib>
#include <string_view>

#include "common/transport/cuda_ipc_descriptor.h"
#include "tests/fuzz/quiet_protobuf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Two bytes of length split the input into the export record and the
  // descriptor it came in.
  if (size < 2) return 0;
  const size_t n = std::min<size_t>(data[0] | data[1] << 8, size - 2);
  const std::string_view record(reinterpret_cast<const char*>(data) + 2, n);
  const std::string_view rest(record.data() + n, size - 2 - n);
  // The same bytes as a transfer's completion record (DecodeRequest).
  if (absl::StatusOr<tandem::CudaIpcCompletion> c = tandem::DecodeCudaIpcCompletion(record, "t0");
      c.ok() && tandem::EncodeCudaIpcCompletion(*c) != record) {
    std::abort();
  }
  absl::StatusOr<tandem::CudaIpcExport> e = tandem::DecodeCudaIpcExport(record, "d0");
  if (!e.ok()) return 0;
  if (tandem::EncodeCudaIpcExport(*e) != record) std::abort();
  tandem::v1::KvPoolDescriptor d;
  if (!d.ParseFromArray(rest.data(), static_cast<int>(rest.size()))) return 0;
  (void)tandem::CheckSameHost(d, "host-a");
  absl::StatusOr<tandem::CudaIpcOffsets> o = tandem::ComputeCudaIpcOffsets(d, *e);
  if (!o.ok()) return 0;
  const unsigned __int128 array = static_cast<unsigned __int128>(d.num_blocks()) * d.block_stride();
  for (size_t l = 0; l < o->key.size(); ++l) {
    if (o->key[l] + array > e->size || o->value[l] + array > e->size) std::abort();
  }
  return 0;
}
