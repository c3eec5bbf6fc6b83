// The staged UCX transport's records as they arrive from peers (pool info
// in a descriptor, chunk/finish/ack active-message headers), and the
// decode side's CheckStagedChunk on every chunk that decodes; whatever
// decodes must re-encode to the very bytes it came from.
#include <cstdlib>
#include <string>
#include <string_view>

#include "common/transport/ucx_staged_protocol.h"

namespace {

// A small decode-side pool to check chunks against.
constexpr int kLayers = 4;
constexpr int32_t kBlocks = 64;
constexpr uint64_t kBlockBytes = 4096;
constexpr uint64_t kSlotBytes = 16 * 2 * kBlockBytes;

template <typename T, typename Encode>
void RoundTrip(const absl::StatusOr<T>& decoded, std::string_view bytes, Encode encode) {
  if (decoded.ok() && encode(*decoded) != bytes) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the record; for chunks it also skews the data
  // size, so CheckStagedChunk sees both honest and lying senders.
  const uint8_t select = data[0];
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (select % 4) {
    case 0: {
      absl::StatusOr<tandem::StagedPoolInfo> info = tandem::DecodeStagedPoolInfo(bytes, "d0");
      RoundTrip(info, bytes, tandem::EncodeStagedPoolInfo);
      if (info.ok()) (void)tandem::StagedBlocksPerChunk(kSlotBytes, info->slot_bytes, kBlockBytes);
      break;
    }
    case 1: {
      absl::StatusOr<tandem::StagedChunkHeader> h = tandem::DecodeStagedChunk(bytes);
      RoundTrip(h, bytes, tandem::EncodeStagedChunk);
      if (h.ok()) {
        const uint64_t honest = 2 * static_cast<uint64_t>(h->blocks()) * kBlockBytes;
        const uint64_t data_bytes = honest + static_cast<uint64_t>(static_cast<int8_t>(select) >> 2) * kBlockBytes;
        if (tandem::CheckStagedChunk(*h, data_bytes, kLayers, kBlocks, kBlockBytes, kSlotBytes).ok()) {
          // What the receiver then copies must lie in the pool and the slot.
          for (const tandem::BlockRun& r : h->runs) {
            if (r.dst < 0 || r.count <= 0 || int64_t{r.dst} + r.count > kBlocks) std::abort();
          }
          if (data_bytes > kSlotBytes) std::abort();
        }
      }
      break;
    }
    case 2:
      RoundTrip(tandem::DecodeStagedFinish(bytes), bytes, tandem::EncodeStagedFinish);
      break;
    case 3:
      RoundTrip(tandem::DecodeStagedAck(bytes), bytes, tandem::EncodeStagedAck);
      break;
  }
  return 0;
}
