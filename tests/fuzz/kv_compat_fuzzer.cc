// The KV handshake on a peer's pool descriptor: CheckKvCompatible and
// CheckBlocksInRange on a KvPoolDescriptor parsed from the bytes (after the
// destination block ids), against this side's fixed layout.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/transport/kv_transport.h"
#include "tests/fuzz/quiet_protobuf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One byte of count, that many little-endian int32 block ids, then the
  // descriptor.
  if (size < 1) return 0;
  const size_t count = std::min<size_t>(data[0], (size - 1) / 4);
  std::vector<int32_t> dst(count);
  if (count > 0) std::memcpy(dst.data(), data + 1, count * 4);
  const size_t at = 1 + count * 4;
  tandem::v1::KvPoolDescriptor remote;
  if (!remote.ParseFromArray(data + at, static_cast<int>(size - at))) return 0;

  tandem::KvLayout local;
  local.num_layers = 2;
  local.num_kv_heads = 2;
  local.head_dim = 8;
  local.block_size = 16;
  local.dtype = tandem::DType::kBF16;
  const tandem::KvEndpointInfo self{"p0", "fp", "cpu"};
  const bool compatible = tandem::CheckKvCompatible(self, local, remote).ok();
  const bool in_range = tandem::CheckBlocksInRange(remote, dst).ok();
  if (compatible && (remote.key_base_size() != local.num_layers ||
                     remote.block_stride() != static_cast<uint64_t>(local.block_bytes()))) {
    std::abort();
  }
  if (in_range) {
    for (int32_t b : dst) {
      if (b < 0 || b >= remote.num_blocks()) std::abort();
    }
  }
  return 0;
}
